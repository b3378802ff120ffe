"""Fixtures: a tiny binarized prompted corpus, its task and a tiny model (see helpers.py)."""

import pytest
import torch
from fairseq import tasks

from helpers import binarize, training_cfg, write_reversal_corpus


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    write_reversal_corpus(raw)
    return binarize(raw, tmp_path_factory.mktemp("bin"))


@pytest.fixture(scope="session")
def tiny_cfg(tiny_data):
    return training_cfg(tiny_data)


@pytest.fixture(scope="session")
def tiny_task(tiny_cfg):
    task = tasks.setup_task(tiny_cfg.task)
    for split in ("train", "valid", "test"):
        task.load_dataset(split)
    return task


@pytest.fixture()
def tiny_model(tiny_cfg, tiny_task):
    torch.manual_seed(0)
    return tiny_task.build_model(tiny_cfg.model).eval()
