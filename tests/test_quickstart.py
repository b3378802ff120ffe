"""examples/quickstart.sh, the README's main job, at 40 updates: every stage runs, a
progress line comes every --log-interval updates while it trains, the summary lines are
printed, and the same --seed gives the same hypotheses twice."""

import re

import pytest
from helpers import BIN, run

pytestmark = pytest.mark.slow  # two runs of the whole pipeline, about a minute each

SIGNATURE = "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:"


def quickstart(workdir, *options, ok=True):
    return run(["bash", "examples/quickstart.sh", "--venv", BIN.parent, "--workdir", workdir, *options], ok=ok)


def test_quickstart_trains_decodes_scores_and_repeats_itself(tmp_path):
    scores, hypotheses = [], []
    for workdir in (tmp_path / "run1", tmp_path / "run2"):
        out = quickstart(workdir, "--max-update", "40", "--seed", "3", "--log-interval", "10").stdout
        progress = re.findall(r"^== update (\d+)/40 \| loss [\d.]+ \| accuracy [\d.]+% \| \d+ (?:s|min), about \d+ (?:s|min) left$", out, re.M)
        assert progress == ["10", "20", "30", "40"], out[:3000]
        assert re.search(r"^== valid at update 40 \| loss [\d.]+ \| accuracy [\d.]+%$", out, re.M)
        assert len(re.findall(r"\| train_inner \|", (workdir / "train.log").read_text())) == 4  # the whole log kept
        assert re.search(r"== trained 40 updates in \d+ s \(valid masked-token accuracy [\d.]+%\)", out)
        assert "Translated 500 sentences" in out
        score = re.search(re.escape(SIGNATURE) + r"[\d.]+ = [\d.]+ .*", out)
        assert score, out[-1000:]
        scores.append(score.group())
        hypotheses.append((workdir / "test.hyp").read_text(encoding="utf-8"))
    assert len(hypotheses[0].splitlines()) == 500 and hypotheses[0].strip()
    assert hypotheses[0] == hypotheses[1]  # the same --seed and --threads: the same output
    assert scores[0] == scores[1]


def test_quickstart_refuses_an_unknown_option_before_doing_anything(tmp_path):
    result = quickstart(tmp_path / "run", "--max-updates", "40", ok=False)
    assert result.returncode == 2
    assert "quickstart.sh: unknown option --max-updates (see --help)" in result.stderr
    assert not (tmp_path / "run").exists()
