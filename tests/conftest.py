"""Fixtures: a tiny binarized prompted corpus, its task and a tiny model (see helpers.py).

Under pytest-xdist (scripts/test.sh) each worker, and every process it starts, runs on one
thread, so the workers do not compete for the cores; the slow files are collected first,
so that no worker starts one when the others are about to finish."""

import os

import pytest
import torch
from fairseq import tasks

from helpers import binarize, training_cfg, write_reversal_corpus

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # a stable sort: each file stays whole


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
