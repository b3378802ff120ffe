"""scripts/train_progress.py, fed fairseq-train's simple-format lines: one progress line
per training and validation line, every line in the log file, and a line saying training
goes on while the input stalls."""

import subprocess
import sys
import time

from helpers import SCRIPTS

TRAIN = ("2026-12-07 17:00:0{0} | INFO | train_inner | epoch 001:     {1} / 525 loss=5.{0}, diffusion_loss=5.1, "
         "nll_loss=3.2, ppl=9.1, length_loss=2.2, accuracy=4{0}.5, mask_ratio=0.5, wps=900, ups=1.2, wpb=800, "
         "bsz=90, num_updates={1}, lr=0.001, gnorm=2.1, train_wall=8, gb_free=None, wall=20\n")
VALID = ("2026-12-07 17:00:09 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 4.9 | nll_loss 3 | "
         "accuracy 47.25 | wps 3000 | num_updates 20\n")


def test_progress_lines_log_file_and_a_line_while_input_stalls(tmp_path):
    log = tmp_path / "train.log"
    printer = subprocess.Popen(
        [sys.executable, SCRIPTS / "train_progress.py", log, "--max-update", "40", "--every", "0.2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    printer.stdin.write("some startup line\n" + TRAIN.format(1, 10))
    printer.stdin.flush()
    time.sleep(1.5)  # no input: the printer says training goes on
    printer.stdin.write(TRAIN.format(2, 20) + VALID)
    out, _ = printer.communicate(timeout=60)
    lines = out.splitlines()
    assert lines[0].startswith("== update 10/40 | loss 5.1 | accuracy 41.5% | ")
    stalled = [line for line in lines if line.startswith("== training, 10+ updates done, no log line for 0.2 s")]
    assert stalled and lines[1:1 + len(stalled)] == stalled
    assert lines[-2].startswith("== update 20/40 | loss 5.2 | accuracy 42.5% | ") and "left" in lines[-2]
    assert lines[-1] == "== valid at update 20 | loss 4.9 | accuracy 47.25%"
    assert log.read_text() == "some startup line\n" + TRAIN.format(1, 10) + TRAIN.format(2, 20) + VALID
