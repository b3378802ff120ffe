"""scripts/plot_trajectory.py: reading --retain-iter-history output and drawing it."""

import pytest

from helpers import load_script

plot_trajectory = load_script("plot_trajectory")

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
    histories = plot_trajectory.read_histories(path)
    assert histories[0][1] == ["c", "<mask>", "<mask>"]
    assert plot_trajectory.cell_states(histories[1]) == [
        ["masked", "masked"],
        ["committed", "masked"],
        ["remasked", "committed"],
        ["committed", "kept"],
    ]
    assert plot_trajectory.cell_states([["a", "b"], ["a", "c"]])[1] == ["kept", "replaced"]


def test_writes_a_png(tmp_path):
    path = tmp_path / "gen.txt"
    path.write_text(OUTPUT)
    out = tmp_path / "trajectory.png"
    plot_trajectory.main([str(path), "--ids", "0", "1", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "gen.txt"
    path.write_text("H-0\t-0.5\tc b a\n")
    with pytest.raises(SystemExit, match="--retain-iter-history"):
        plot_trajectory.main([str(path)])
    path.write_text(OUTPUT)
    with pytest.raises(SystemExit, match=r"sentence id\(s\) \[7\]"):
        plot_trajectory.main([str(path), "--ids", "7"])
    path.write_text("E-0_0\t<mask>\nE-0_2\tx\n")
    with pytest.raises(SystemExit, match="misses steps"):
        plot_trajectory.main([str(path)])
