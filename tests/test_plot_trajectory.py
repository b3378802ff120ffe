"""scripts/plot_trajectory.py (diffusion_plugin.tools.trajectory): reading
--retain-iter-history output and drawing it."""

import sys

import pytest

from helpers import run
from diffusion_plugin.tools import trajectory

OUTPUT = """S-0\tReverse : a b c =
T-0\tc b a
H-0\t-0.5\tc b a
E-0_0\t<mask> <mask> <mask>
E-0_1\tc <mask> <mask>
E-0_2\tc b <mask>
E-0_3\tc b a
E-1_0\t<mask> <mask>
E-1_1\tx <mask>
E-1_2\t<mask> y
E-1_3\tz y
"""


def test_cell_states_name_what_each_step_did(tmp_path):
    path = tmp_path / "gen.txt"
    path.write_text(OUTPUT)
    histories = trajectory.read_histories(path)
    assert histories[0][1] == ["c", "<mask>", "<mask>"]
    assert trajectory.cell_states(histories[1]) == [
        ["masked", "masked"],
        ["committed", "masked"],
        ["remasked", "committed"],
        ["committed", "kept"],
    ]
    assert trajectory.cell_states([["a", "b"], ["a", "c"]])[1] == ["kept", "replaced"]


def test_writes_a_png(tmp_path):
    path = tmp_path / "gen.txt"
    path.write_text(OUTPUT)
    out = tmp_path / "trajectory.png"
    assert trajectory.draw(str(path), [0, 1], str(out)) == [0, 1]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "gen.txt"
    path.write_text("H-0\t-0.5\tc b a\n")
    with pytest.raises(ValueError, match="--retain-iter-history"):
        trajectory.draw(str(path))
    path.write_text(OUTPUT)
    with pytest.raises(ValueError, match=r"sentence id\(s\) \[7\]"):
        trajectory.draw(str(path), [7])
    path.write_text("E-0_0\t<mask>\nE-0_2\tx\n")
    with pytest.raises(ValueError, match="misses steps"):
        trajectory.draw(str(path))


@pytest.mark.slow
def test_the_script_draws_and_exits_with_1_on_bad_input(tmp_path):
    path = tmp_path / "gen.txt"
    path.write_text(OUTPUT)
    out = tmp_path / "t.png"
    result = run([sys.executable, "scripts/plot_trajectory.py", path, "--out", out])
    assert result.stdout.strip() == f"wrote {out} (2 sentences)" and out.exists()
    failed = run([sys.executable, "scripts/plot_trajectory.py", path, "--ids", "7"], ok=False)
    assert failed.returncode == 1 and "error: " in failed.stderr and "sentence id(s) [7]" in failed.stderr
