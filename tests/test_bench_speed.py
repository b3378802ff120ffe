"""python -m benchmarks.bench_speed --mode throughput --smoke: the training rows with their
profiles and the decoding rows at random init, the shape of each table and what
results.json records (never the numbers)."""

import json
import re
import subprocess

import pytest

from helpers import BIN, ROOT

MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"
pytestmark = pytest.mark.slow  # about 20 short training and decoding measurements


def table_rows(text, header_start):
    """The rows (lists of cells) of every markdown table whose header starts with header_start."""
    lines, rows = text.splitlines(), []
    for start in (i for i, line in enumerate(lines) if line.startswith(header_start)):
        for line in lines[start + 2:]:
            if not line.startswith("|"):
                break
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_smoke_prints_every_table_and_records_every_command(tmp_path):
    if not MULTI30K.is_dir():
        pytest.skip(f"the shared Multi30k corpus is not at {MULTI30K}")
    result = subprocess.run(
        [str(BIN / "python"), "-m", "benchmarks.bench_speed", "--mode", "throughput", "--smoke",
         "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (tmp_path / "results.md").read_text()
    assert report.strip() in result.stdout

    training = table_rows(report, "| model | training |")
    names = {(row[0], row[1]) for row in training}
    assert {("cmlm", "fp32"), ("plugin", "--bf16-autocast"), ("prefix", "--bf16-autocast"),
            ("plugin", "--bf16-autocast, fairseq's gelu"), ("prefix", "--bf16-autocast, per-row prompts"),
            ("plugin", "--bf16-autocast, compiled layers")} <= names
    assert all(len(row) == 11 for row in training)
    for row in training:  # a row measured against another names it and gives the ratio
        assert re.fullmatch(r"[\d.]+×", row[3]) and (row[4] == "") == (row[5] == ""), row
        assert row[4] == "" or re.fullmatch(r"[\d.]+×", row[5]), row
        assert re.fullmatch(r"[\d.]+% (fp32|bf16)", row[8]) and float(row[10].replace(",", "")) > 0

    for profiled in ("cmlm, fp32", "plugin, --bf16-autocast", "prefix, --bf16-autocast"):
        assert f"**{profiled}**" in report
    regions = {row[0] for row in table_rows(report, "| part of the update |")}
    assert {"forward", "backward", "optimizer", "data"} <= regions
    ops = {row[0] for row in table_rows(report, "| forward + backward, by op |")}
    assert {"matmul", "Python and dispatch overhead"} <= ops

    decoding = table_rows(report, "| model | decoding |")
    assert [row[:2] for row in decoding[:2]] == [["transformer", "beam 5"], ["transformer", "greedy"]]
    assert ["prefix", "K=4, 1 length, --prompt-cache (exact), bf16"] in [row[:2] for row in decoding]
    assert all(len(row) == 17 and re.fullmatch(r"[\d.]+", row[2]) for row in decoding)
    for row in decoding:  # a row measured against another names it and gives both speed-ups
        assert row[10] == "" or (re.fullmatch(r"[\d.]+×", row[11]) and re.fullmatch(r"[\d.]+×", row[12]))
        assert re.fullmatch(r"[\d.]+×", row[4]) and re.fullmatch(r"[\d.]+M", row[15]), row
    assert "Random-init checkpoints (transformer, prefix, plugin)" in report

    record = json.loads((tmp_path / "results.json").read_text())
    assert set(record["matmul_peak_gflops"]) == {"fp32", "bf16"}
    for row in record["training"]:
        assert "benchmarks.train_worker" in row["command"] and row["peak_rss_mib"] > 0
        assert row["flops_per_target_token"] > 0 and row["target_tokens_per_second"] > 0
    assert all(row["peak_rss_mib"] > 0 for row in record["decoding"])
    assert set(record["checkpoints"]) == {"transformer", "prefix", "plugin"}


def test_levers_smoke_measures_every_model_and_each_lever_against_its_baseline(tmp_path):
    mmlu = ROOT.parent / "shared" / "data" / "instruct" / "mmlu" / "2-shot" / "val"
    if not MULTI30K.is_dir() or not mmlu.is_dir():
        pytest.skip(f"the shared Multi30k corpus or MMLU 2-shot is not at {MULTI30K.parent}")
    result = subprocess.run(
        [str(BIN / "python"), "-m", "benchmarks.bench_speed", "--smoke", "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (tmp_path / "results.md").read_text()
    decoding = table_rows(report, "| model | decoding |")
    assert {row[0] for row in decoding} == {"transformer", "cmlm", "plugin", "prefix"}
    assert all(len(row) == 17 and re.fullmatch(r"[\d,]+", row[16]) for row in decoding)
    mmlu_rows = [row for row in decoding if row[1].startswith("MMLU")]
    assert len(mmlu_rows) == 4 and all(row[2] == "–" for row in mmlu_rows)
    levers = [row for row in decoding if row[10]]
    assert len(levers) >= 10 and all(re.fullmatch(r"[\d.]+×", row[11]) for row in levers)
    assert "Plugin's best BLEU" in report and "CPU bf16 training" in report
    record = json.loads((tmp_path / "results.json").read_text())
    assert set(record["checkpoints"]) == {"transformer", "cmlm", "plugin", "prefix"}
    assert "--finetune-from-model" in record["commands"]["train_prefix"]
    assert set(record["training_target_tokens_per_second"]) == {"transformer", "cmlm", "plugin", "prefix",
                                                                 "plugin_fp32"}
