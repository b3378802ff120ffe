"""prepare_prompted.py -> fairseq-train -> fairseq-generate (BLEU) -> fairseq-interactive."""

import re
import sys

import pytest
import sacrebleu
import torch

from helpers import BIN, TASK_ARGS, run, write_reversal_corpus

pytestmark = pytest.mark.slow  # fairseq-train, -generate and -interactive runs (subprocesses)


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
    # sacreBLEU's signature and score on the detokenized hypotheses (D-) and references (T-)
    score = re.search(r"^Generate test with beam=\d+: (BLEU\|nrefs:1\|case:mixed\|eff:no\|tok:13a\|smooth:exp\|version:[\d.]+ = .*)$", out, re.M)
    assert score, out[-500:]
    ids = [int(i) for i in re.findall(r"^D-(\d+)\t", out, re.M)]
    hypotheses = dict(zip(ids, re.findall(r"^D-\d+\t\S+\t(.*)$", out, re.M)))
    references = dict(re.findall(r"^T-(\d+)\t(.*)$", out, re.M))
    bleu = sacrebleu.BLEU(tokenize="13a")
    expected = bleu.corpus_score([hypotheses[i] for i in sorted(ids)], [[references[str(i)] for i in sorted(ids)]])
    assert score.group(1) == expected.format(signature=str(bleu.get_signature()))
    assert "diffusion decoding: at most 4 steps (--iter-decode-max-iter), length beam 3 (topk)" in result.stderr
    sources = re.findall(r"^S-\d+\t(.*)$", out, re.M)
    assert all(s.startswith("Reverse the words. Words:") for s in sources)
    (save_dir / "generate.txt").write_text(out)
    picture = save_dir / "trajectory.png"
    run([sys.executable, "scripts/plot_trajectory.py", str(save_dir / "generate.txt"), "--out", str(picture)])
    assert picture.stat().st_size > 0


def interactive(data, save_dir, lines):
    """fairseq-interactive on checkpoint_last.pt (3 steps, 2 lengths) fed ``lines``."""
    return run(
        [
            str(BIN / "fairseq-interactive"), str(data), *TASK_ARGS,
            "--path", str(save_dir / "checkpoint_last.pt"), "--iter-decode-max-iter", "3",
            "--iter-decode-with-beam", "2", "--bpe", "sentencepiece",
            "--sentencepiece-model", str(data / "sentencepiece.bpe.model"),
        ],
        input=lines,
    )


def test_checkpoint_reloads_in_interactive_with_the_prompt_template(trained):
    data, save_dir = trained
    result = interactive(data, save_dir, "w1 w2 w3\nw4 w5\n")
    sources = re.findall(r"^S-\d+\t(.*)$", result.stdout, re.M)
    assert len(sources) == 2
    joined = "".join(sources[0].split()).replace("\u2581", "")
    assert joined == "Reversethewords.Words:w1w2w3Reversed:", "template applied before sentencepiece"
    assert len(re.findall(r"^D-\d+\t", result.stdout, re.M)) == 2


def test_separate_length_predictor_trains_alone_and_decodes(trained, tmp_path):
    data, save_dir = trained
    stage_two = tmp_path / "length"
    run(
        [
            str(BIN / "fairseq-train"), str(data),
            "--user-dir", "diffusion_plugin", "--task", "prompted_translation", "-s", "src", "-t", "tgt",
            "--arch", "diffusion_xlmr_tiny", "--encoder-layers", "2", "--encoder-embed-dim", "64",
            "--encoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2", "--max-positions", "128",
            "--length-predictor", "separate", "--criterion", "length_prediction",
            "--finetune-from-model", str(save_dir / "checkpoint_last.pt"),
            "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "1500", "--max-update", "5",
            "--save-dir", str(stage_two), "--no-epoch-checkpoints", "--log-format", "simple",
        ]
    )
    stage_one = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)["model"]
    trained_two = torch.load(stage_two / "checkpoint_last.pt", weights_only=True)["model"]
    predictor = {k for k in trained_two if k.startswith("length_predictor.")}
    # the separate predictor replaces the joint head, which stage two neither builds nor saves
    joint_head = {k for k in stage_one if k.startswith("length_head.")}
    assert joint_head and not joint_head & set(trained_two)
    assert predictor and set(trained_two) - predictor == set(stage_one) - joint_head
    for key in set(stage_one) - joint_head:
        assert torch.equal(stage_one[key], trained_two[key]), f"{key} changed in stage two"
    result = run(
        [
            str(BIN / "fairseq-generate"), str(data),
            "--user-dir", "diffusion_plugin", "--task", "prompted_translation", "-s", "src", "-t", "tgt",
            "--path", str(stage_two / "checkpoint_last.pt"), "--gen-subset", "test",
            "--iter-decode-max-iter", "6", "--iter-decode-with-beam", "2",
            "--decoding-strategy", "threshold0.9", "--oracle-length", "--print-step",
        ]
    )
    targets = dict(re.findall(r"^T-(\d+)\t(.*)$", result.stdout, re.M))
    hypotheses = dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", result.stdout, re.M))
    assert len(targets) == len(hypotheses) == 20
    for key, reference in targets.items():
        assert len(hypotheses[key].split()) == len(reference.split()), "oracle length"


def test_python_interface_matches_interactive(trained):
    from diffusion_plugin import from_pretrained

    data, save_dir = trained
    lm = from_pretrained(str(save_dir), "checkpoint_last.pt", data_name_or_path=str(data))
    outputs = lm.generate(
        ["w1 w2 w3", "w4 w5"], iter_decode_max_iter=3, iter_decode_with_beam=2, retain_iter_history=True
    )
    assert [len(candidates) for candidates in outputs] == [2, 2]
    best = outputs[0][0]
    assert best["score"] >= outputs[0][1]["score"]
    assert len(best["history"]) == best["steps"] + 1
    assert "<mask>" in best["history"][0] and "<mask>" not in best["text"]
    result = interactive(data, save_dir, "w1 w2 w3\nw4 w5\n")
    detokenized = re.findall(r"^D-\d+\t\S+\t(.*)$", result.stdout, re.M)
    assert detokenized == [outputs[0][0]["text"], outputs[1][0]["text"]]
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        from_pretrained(str(save_dir), "missing.pt", data_name_or_path=str(data))
