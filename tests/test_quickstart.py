"""examples/quickstart.sh, the README's main job, at 40 updates: every stage runs, the
summary lines are printed, and the same --seed gives the same hypotheses twice."""

import re
import subprocess

import pytest
from helpers import BIN, ROOT

pytestmark = pytest.mark.slow  # two runs of the whole pipeline, about a minute each

SIGNATURE = "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:"


def quickstart(workdir, *options):
    return subprocess.run(
        ["bash", "examples/quickstart.sh", "--venv", str(BIN.parent), "--workdir", str(workdir),
         *options], cwd=ROOT, capture_output=True, text=True,
    )


def test_quickstart_trains_decodes_scores_and_repeats_itself(tmp_path):
    runs = [quickstart(tmp_path / f"run{i}", "--max-update", "40", "--seed", "3") for i in (1, 2)]
    for result in runs:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        out = result.stdout
        assert re.search(r"== trained 40 updates in \d+ s \(valid masked-token accuracy [\d.]+%\)", out)
        assert "Translated 500 sentences" in out
        assert re.search(re.escape(SIGNATURE) + r"[\d.]+ = [\d.]+ ", out), out[-1000:]
    hypotheses = [(tmp_path / f"run{i}" / "test.hyp").read_text(encoding="utf-8") for i in (1, 2)]
    assert len(hypotheses[0].splitlines()) == 500 and hypotheses[0].strip()
    assert hypotheses[0] == hypotheses[1]  # the same --seed and --threads: the same output
    scores = [re.search(re.escape(SIGNATURE) + r".*", r.stdout).group() for r in runs]
    assert scores[0] == scores[1]


def test_quickstart_refuses_an_unknown_option_before_doing_anything(tmp_path):
    result = quickstart(tmp_path / "run", "--max-updates", "40")
    assert result.returncode == 2
    assert "quickstart.sh: unknown option --max-updates (see --help)" in result.stderr
    assert not (tmp_path / "run").exists()
