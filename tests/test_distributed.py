"""Two data-parallel workers (fairseq's own gloo path on CPU, started by
scripts/train_local_workers.py) train as one worker with --update-freq 2.

fairseq deals batch r, r + 2, ... of each epoch to rank r and, with --update-freq 2,
batches 2k and 2k + 1 to update k of one worker: the same pairs of batches. Every batch
has 8 pairs (--batch-size 8 --required-batch-size-multiple 1), and the criterion seeds
each batch's time, mask and dropout draws by fairseq's per-update seed and the batch
(``batch_seed``), so both runs see the same noised rows; only the order of the
gradient sums differs.
"""

import json
import shlex
import sys

import pytest
import torch

from helpers import BIN, SCRIPTS, TINY_ARGS, run
from diffusion_plugin.tools.local_workers import worker_commands

UPDATES = 4
TRAIN_ARGS = [
    *TINY_ARGS, "--optimizer", "adam", "--lr", "1e-3", "--dropout", "0.1",
    "--batch-size", "8", "--required-batch-size-multiple", "1", "--max-update", str(UPDATES),
    "--seed", "1", "--disable-validation", "--no-epoch-checkpoints", "--num-workers", "0",
    "--log-format", "json", "--log-interval", "1",
]
LOGGED = ("loss", "diffusion_loss", "length_loss", "accuracy", "sample_size", "bsz", "wpb", "gnorm")


def train_log(output):
    """The JSON stats fairseq-train logged after each update."""
    return [json.loads(line.split(" | train_inner | ")[1]) for line in output.splitlines() if " | train_inner | " in line]


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """(log, model state) of one worker with --update-freq 2 and of two workers."""
    work = tmp_path_factory.mktemp("distributed")
    one = run([BIN / "fairseq-train", tiny_data, *TRAIN_ARGS, "--update-freq", "2", "--save-dir", work / "one"])
    two = run(
        [
            sys.executable, SCRIPTS / "train_local_workers.py", "--workers", "2", "--",
            tiny_data, *TRAIN_ARGS, "--save-dir", work / "two",
        ],
        timeout=900,  # a rank that never joins would otherwise wait for gloo's 30 minutes
    )
    states = [torch.load(work / name / "checkpoint_last.pt", weights_only=False) for name in ("one", "two")]
    return [train_log(one.stdout + one.stderr), train_log(two.stdout + two.stderr)], states


@pytest.mark.slow  # a subprocess
def test_two_workers_log_what_one_worker_with_update_freq_2_logs(runs):
    (one, two), _ = runs
    assert len(one) == len(two) == UPDATES
    for update, (single, parallel) in enumerate(zip(one, two)):
        assert float(single["sample_size"]) == float(parallel["sample_size"]) == 2 * 2 * 8, "coupled rows of 2 batches"
        for key in LOGGED:
            assert float(parallel[key]) == pytest.approx(float(single[key]), rel=1e-3, abs=1e-3), (update, key)


@pytest.mark.slow  # a subprocess
def test_two_workers_reach_the_parameters_of_one_worker_with_update_freq_2(runs):
    _, (one, two) = runs
    assert one["optimizer_history"][-1]["num_updates"] == two["optimizer_history"][-1]["num_updates"] == UPDATES
    assert [state["cfg"]["distributed_training"]["distributed_world_size"] for state in (one, two)] == [1, 2]
    assert one["model"].keys() == two["model"].keys()
    for key, value in one["model"].items():
        difference = (value - two["model"][key]).abs().max().item()
        assert difference < 1e-5, f"{key}: parameters differ by {difference}"


def test_each_rank_gets_fairseqs_distributed_flags(tmp_path):
    commands = worker_commands("fairseq-train", 3, 12345, ["data", "--max-update", "5"])
    assert [command[-1] for command in commands] == ["0", "1", "2"]
    expected = (
        "fairseq-train --cpu --distributed-world-size 3 --distributed-init-method tcp://127.0.0.1:12345 "
        "--distributed-backend gloo --distributed-no-spawn --ddp-backend legacy_ddp data --max-update 5 "
        "--distributed-rank 1"
    )
    assert shlex.join(commands[1]) == expected
    with pytest.raises(ValueError, match="--distributed-world-size is set by scripts/train_local_workers.py"):
        worker_commands("fairseq-train", 2, 12345, ["data", "--distributed-world-size", "4"])
