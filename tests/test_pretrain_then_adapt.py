"""examples/pretrain_then_adapt.sh --smoke: fairseq masked_lm pretraining, adaptation with
--pretrained-mlm and from scratch, and the table comparing them."""

import re

import pytest
from helpers import BIN, ROOT, run

pytestmark = pytest.mark.slow  # bash examples/pretrain_then_adapt.sh --smoke (subprocesses)

MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"


def test_smoke_run_prints_the_comparison_table(tmp_path):
    if not MULTI30K.is_dir():
        pytest.skip(f"the shared Multi30k corpus is not at {MULTI30K}")
    workdir = tmp_path / "work"
    result = run(["bash", "examples/pretrain_then_adapt.sh", "--smoke", "--venv", BIN.parent,
                  "--data", MULTI30K, "--workdir", workdir])
    rows = dict(re.findall(r"^\| (masked LM, then adapted|from scratch) \|.*\| ([\d.]+) \|$",
                           result.stdout, flags=re.M))
    assert set(rows) == {"masked LM, then adapted", "from scratch"}, result.stdout
    assert "20 updates × 2000 tokens" in result.stdout
    for name in ("mlm", "pretrained", "scratch"):
        assert (workdir / "checkpoints" / name / "checkpoint_last.pt").is_file()
    log = (workdir / "pretrained.log").read_text()
    assert re.search(r"initialised from .*checkpoints/mlm/checkpoint_last\.pt: (\d+) of \1 dictionary", log)
    assert "initialised from" not in (workdir / "scratch.log").read_text()
