"""examples/instruct_cpu.sh --smoke (instruction tuning + scripts/evaluate_instruct.py on
every shared instruct set), and ROUGE from training validation and fairseq-generate
--scoring rouge."""

import json
import re
import sys

import pytest

from helpers import BIN, ROOT, TASK_ARGS, run, write_reversal_corpus

pytestmark = pytest.mark.slow  # examples/instruct_cpu.sh and fairseq runs (subprocesses)

INSTRUCT = ROOT.parent / "shared" / "data" / "instruct"
SETS = ("mmlu/0-shot", "bbh-nlp/0-shot", "tydiqa/0-shot", "mgsm/0-shot", "iwslt14/0-shot")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if not INSTRUCT.is_dir():
        pytest.skip(f"the shared instruct sets are not at {INSTRUCT}")
    workdir = tmp_path_factory.mktemp("instruct_cpu")
    result = run(["bash", "examples/instruct_cpu.sh", "--smoke", "--venv", BIN.parent, "--workdir", workdir,
                  "--data", INSTRUCT.parent])
    return workdir, result.stdout


@pytest.mark.slow
def test_smoke_recipe_reports_every_instruct_set(smoke):
    workdir, stdout = smoke
    report = json.loads((workdir / "report.json").read_text())
    assert list(report["sets"]) == list(SETS) and report["rules"]["lowercase"] is True
    mmlu, bbh, tydiqa, mgsm, iwslt = (report["sets"][name] for name in SETS)
    assert len(mmlu["groups"]) == 57 and mmlu["examples"] == 2 * 57 and "micro" in mmlu["metric"]
    assert len(bbh["groups"]) == 12 and "macro" in bbh["metric"]
    assert set(tydiqa["groups"]) == {"finnish", "indonesian", "swahili"}  # the paper's 8 languages present
    assert "english.jsonl" not in str(tydiqa["files"]) and "telugu" in tydiqa["absent_languages"]
    assert set(mgsm["groups"]) == {"de", "en", "zh"}
    assert [f["path"][-len("iwslt14/0-shot/validation/deen.jsonl"):] for f in iwslt["files"]] == [
        "iwslt14/0-shot/validation/deen.jsonl"]
    assert mmlu["split"] == "val" and sum(f["examples"] for f in mmlu["files"]) == mmlu["examples"]
    assert "tok:13a" in iwslt["groups"]["deen"]["signature"] and "case:lc" in iwslt["groups"]["deen"]["signature"]
    for entry in report["sets"].values():
        assert 0.0 <= entry["score"] <= 100.0
        assert entry["length"] == "oracle length" and entry["max_iter"] == 2
    table = (workdir / "report.md").read_text()
    assert table in stdout and "| mgsm/0-shot · zh |" in table
    summary = json.loads((workdir / "data-bin" / "prepare_summary.json").read_text())
    assert summary["splits"]["train"]["examples"] == 300


@pytest.mark.slow
def test_evaluation_with_a_length_beam_and_without_lowercasing(smoke):
    workdir, _ = smoke
    out = workdir / "beam.json"
    run([sys.executable, "scripts/evaluate_instruct.py",
        "--path", str(workdir / "checkpoints" / "checkpoint_last.pt"), "--data", str(workdir / "data-bin"),
        "--instruct-dir", str(INSTRUCT), "--sets", "mgsm/3-shot", "iwslt14/1-shot",
        "--split", "iwslt14=validation", "--max-per-file", "1", "--length-beam", "2", "--no-lowercase",
        "--out", str(out),
    ])
    report = json.loads(out.read_text())
    assert report["rules"]["lowercase"] is False
    assert report["sets"]["mgsm/3-shot"]["length"] == "length beam 2"
    assert report["sets"]["mgsm/3-shot"]["max_iter"] == 50 and report["sets"]["iwslt14/1-shot"]["max_iter"] == 50
    assert "case:mixed" in report["sets"]["iwslt14/1-shot"]["groups"]["deen"]["signature"]


@pytest.mark.slow
def test_evaluation_rejects_an_unknown_set(smoke):
    workdir, _ = smoke
    result = run([
        sys.executable, "scripts/evaluate_instruct.py",
        "--path", str(workdir / "checkpoints" / "checkpoint_last.pt"), "--data", str(workdir / "data-bin"),
        "--instruct-dir", str(INSTRUCT), "--sets", "gsm8k/0-shot", "--out", str(workdir / "x.json"),
    ], ok=False)
    assert result.returncode == 1
    assert "evaluate_instruct.py: error: --sets 'gsm8k/0-shot': use FAMILY/K-shot" in result.stderr
    assert not (workdir / "x.json").exists()


@pytest.mark.slow
def test_rouge_in_training_validation_and_from_generate_output(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_reversal_corpus(raw, sizes=(("train", 200), ("valid", 10), ("test", 10)))
    data = tmp_path / "data-bin"
    run([sys.executable, "scripts/prepare_prompted.py", "--source-lang", "src", "--target-lang", "tgt",
         "--trainpref", raw / "train", "--validpref", raw / "valid", "--testpref", raw / "test",
         "--template", "{src}", "--vocab-size", "60", "--destdir", data])
    save_dir = tmp_path / "checkpoints"
    train = run([
        BIN / "fairseq-train", data, *TASK_ARGS, "--arch", "diffusion_xlmr_tiny", "--encoder-layers", "1",
        "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
        "--max-positions", "64", "--length-classes", "16", "--criterion", "masked_diffusion",
        "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "1000", "--max-update", "4",
        "--save-dir", save_dir, "--no-epoch-checkpoints", "--log-format", "simple",
        "--eval-rouge", "--eval-bleu-args", '{"iter_decode_max_iter": 2}', "--eval-bleu-remove-bpe", "sentencepiece",
        "--best-checkpoint-metric", "rougeL", "--maximize-best-checkpoint-metric",
    ])
    valid = re.search(r"valid on 'valid' subset \|.*", train.stdout + train.stderr).group(0)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert re.search(rf"\| {key} \d+(\.\d+)? ", valid), valid
    assert (save_dir / "checkpoint_best.pt").exists()

    from diffusion_plugin.metrics import rouge

    for tokenizer in ("py-rouge", "rouge-score"):
        generate = run([
            BIN / "fairseq-generate", data, *TASK_ARGS, "--path", save_dir / "checkpoint_best.pt", "--gen-subset",
            "test", "--iter-decode-max-iter", "2", "--post-process", "sentencepiece", "--batch-size", "4",
            "--scoring", "rouge", "--rouge-tokenizer", tokenizer,
        ])
        lines = dict(re.findall(r"^([DT]-\d+)\t(?:-?[\d.]+\t)?(.*)$", generate.stdout, re.M))
        ids = sorted({int(key[2:]) for key in lines})
        hyps, refs = ([lines.get(f"{kind}-{i}", "") for i in ids] for kind in "DT")
        assert refs == (raw / "test.tgt").read_text().splitlines() and len(hyps) == 10
        expected = rouge(hyps, refs, tokenizer)
        assert (f"Generate test with beam=1: ROUGE-1 = {expected['rouge1']:.2f}, ROUGE-2 = {expected['rouge2']:.2f}, "
                f"ROUGE-L = {expected['rougeL']:.2f} (F1 %, {tokenizer} words, 10 examples)") in generate.stdout
