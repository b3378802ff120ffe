"""fairseq-train killed (SIGKILL) at an update and resumed from checkpoint_last.pt logs
the same per-update losses as an uninterrupted run with the same seed.

fairseq's Trainer seeds torch with --seed + the number of updates before every
update, so the diffusion's time and mask draws (torch's default generator) and
dropout are those of the uninterrupted run; so are the batches, which
PromptedPairDataset shuffles by --seed alone (fairseq builds them in the epoch a
run starts in, here epoch 2 for the resumed run and epoch 1 for the others).
"""

import json
import re
import signal
import sys

import pytest
import torch

from helpers import BIN, TINY_ARGS, run

pytestmark = pytest.mark.slow  # fairseq-train runs, one of them killed (subprocesses)

UPDATES = 24  # about ten updates an epoch: the kill and the resume fall inside epoch 2
SAVE_EVERY = 4
KILLED_AFTER = 15  # checkpoint_last.pt then holds update 12; 13 to 15 are run twice
TIMING = re.compile(r"(wps|ups|wall)$")

KILL_AT_UPDATE = """
import os, signal, sys
from fairseq.trainer import Trainer
from fairseq_cli.train import cli_main

killed_after = int(sys.argv.pop(1))
train_step = Trainer.train_step


def train_step_or_die(self, samples, raise_oom=False):
    if self.get_num_updates() == killed_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return train_step(self, samples, raise_oom)


Trainer.train_step = train_step_or_die
cli_main()
"""


def logged(result):
    """{(tag, update): the record without its timings} of the logged train_inner and valid lines."""
    records = {}
    for tag, line in re.findall(r"\b(train_inner|valid)[ |:]+(\{.*\})$", result.stdout + result.stderr, re.M):
        record = {k: v for k, v in json.loads(line).items() if not TIMING.search(k)}
        update = next(int(v) for k, v in record.items() if k.endswith("num_updates"))
        records[tag, update] = record
    return records


def test_killed_and_resumed_training_logs_the_uninterrupted_losses(tiny_data, tmp_path):
    def train(save_dir, *prefix, ok=True):
        return run(
            [*prefix, tiny_data, *TINY_ARGS, "--optimizer", "adam", "--lr", "1e-3",
             "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "5", "--batch-size", "32",
             "--seed", "7", "--max-update", UPDATES, "--save-interval-updates", SAVE_EVERY,
             "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "1",
             "--num-workers", "0", "--cpu", "--save-dir", save_dir],
            ok=ok,
        )

    reference = logged(train(tmp_path / "reference", BIN / "fairseq-train"))
    killed = train(tmp_path / "resumed", sys.executable, "-c", KILL_AT_UPDATE, KILLED_AFTER, ok=False)
    assert killed.returncode == -signal.SIGKILL
    last = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=True)
    resumed_from = last["optimizer_history"][-1]["num_updates"]
    assert resumed_from == KILLED_AFTER // SAVE_EVERY * SAVE_EVERY
    before, after = logged(killed), logged(train(tmp_path / "resumed", BIN / "fairseq-train"))

    assert sorted(u for tag, u in before if tag == "train_inner") == list(range(1, KILLED_AFTER + 1))
    assert sorted(u for tag, u in after if tag == "train_inner") == list(range(resumed_from + 1, UPDATES + 1))
    assert {tag for tag, _ in after} == {"train_inner", "valid"}
    for key, record in [*before.items(), *after.items()]:
        assert record == reference[key], f"{key}: {record} != {reference[key]}"
    assert sorted(u for tag, u in reference if tag == "train_inner") == list(range(1, UPDATES + 1))
