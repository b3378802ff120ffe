"""prepare_prompted.py -> fairseq-train -> fairseq-generate (BLEU) -> fairseq-interactive."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import write_reversal_corpus

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(command, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    env.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    write_reversal_corpus(raw, sizes=(("train", 400), ("valid", 20), ("test", 20)))
    data = tmp_path_factory.mktemp("work") / "data-bin"
    run(
        [
            sys.executable, "scripts/prepare_prompted.py",
            "--source-lang", "src", "--target-lang", "tgt",
            "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"), "--testpref", str(raw / "test"),
            "--template", "Reverse the words. Words: {src} Reversed:",
            "--vocab-size", "60", "--destdir", str(data),
        ]
    )
    save_dir = data.parent / "checkpoints"
    run(
        [
            str(BIN / "fairseq-train"), str(data),
            "--user-dir", "diffusion_plugin", "--task", "prompted_translation", "-s", "src", "-t", "tgt",
            "--arch", "diffusion_xlmr_tiny", "--encoder-layers", "2", "--encoder-embed-dim", "64",
            "--encoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2", "--max-positions", "128",
            "--criterion", "masked_diffusion", "--optimizer", "adam", "--lr", "1e-3",
            "--max-tokens", "1500", "--max-update", "30", "--seed", "1",
            "--save-dir", str(save_dir), "--no-epoch-checkpoints", "--log-format", "simple",
            "--eval-bleu", "--eval-bleu-args", '{"iter_decode_max_iter": 3, "iter_decode_with_beam": 2}',
            "--eval-bleu-remove-bpe", "sentencepiece", "--best-checkpoint-metric", "bleu",
            "--maximize-best-checkpoint-metric",
        ]
    )
    return data, save_dir


def test_train_writes_checkpoints_with_bleu_validation(trained):
    data, save_dir = trained
    assert (save_dir / "checkpoint_last.pt").exists() and (save_dir / "checkpoint_best.pt").exists()
    state = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)
    assert state["optimizer_history"][-1]["num_updates"] == 30
    assert "length_head.weight" in state["model"]


def test_generate_prints_hypotheses_history_and_bleu(trained):
    data, save_dir = trained
    result = run(
        [
            str(BIN / "fairseq-generate"), str(data),
            "--user-dir", "diffusion_plugin", "--task", "prompted_translation", "-s", "src", "-t", "tgt",
            "--path", str(save_dir / "checkpoint_best.pt"), "--gen-subset", "test",
            "--iter-decode-max-iter", "4", "--iter-decode-with-beam", "3", "--batch-size", "7",
            "--retain-iter-history", "--print-step", "--post-process", "sentencepiece", "--scoring", "sacrebleu",
        ]
    )
    out = result.stdout
    assert len(re.findall(r"^H-\d+\t", out, re.M)) == 20
    assert len(re.findall(r"^I-\d+\t[1-4]$", out, re.M)) == 20
    assert re.search(r"^E-\d+_0\t<mask>", out, re.M), "history starts from the all-mask canvas"
    assert "<mask>" not in "".join(re.findall(r"^D-\d+\t.*$", out, re.M))
    assert re.search(r"^Generate test with beam=\d+: BLEU = \d+\.\d+", out, re.M)
    sources = re.findall(r"^S-\d+\t(.*)$", out, re.M)
    assert all(s.startswith("Reverse the words. Words:") for s in sources)


def test_checkpoint_reloads_in_interactive_with_the_prompt_template(trained):
    data, save_dir = trained
    result = run(
        [
            str(BIN / "fairseq-interactive"), str(data),
            "--user-dir", "diffusion_plugin", "--task", "prompted_translation", "-s", "src", "-t", "tgt",
            "--path", str(save_dir / "checkpoint_last.pt"), "--iter-decode-max-iter", "3",
            "--iter-decode-with-beam", "2", "--bpe", "sentencepiece",
            "--sentencepiece-model", str(data / "sentencepiece.bpe.model"),
        ],
        input="w1 w2 w3\nw4 w5\n",
    )
    sources = re.findall(r"^S-\d+\t(.*)$", result.stdout, re.M)
    assert len(sources) == 2
    joined = "".join(sources[0].split()).replace("\u2581", "")
    assert joined == "Reversethewords.Words:w1w2w3Reversed:", "template applied before sentencepiece"
    assert len(re.findall(r"^D-\d+\t", result.stdout, re.M)) == 2
