"""Shared fixtures: a tiny binarized prompted corpus, its task and a tiny model."""

import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fairseq import options, tasks
from fairseq.data import Dictionary
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq_cli import preprocess

import diffusion_plugin  # noqa: F401  (registers the plugin's components)

WORDS = [f"w{i}" for i in range(30)]
ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
BIN = Path(sys.executable).parent  # fairseq-train, fairseq-generate, ...


def run(command, **kwargs):
    """Run ``command`` from the repository root on one thread; it must succeed."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    env.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def load_script(name):
    """The module scripts/{name}.py."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_reversal_corpus(directory, sizes=(("train", 300), ("valid", 30), ("test", 30)), seed=0):
    """Prompt 'reverse : <words> =' with target the reversed words, in {split}.src/.tgt."""
    rng = random.Random(seed)
    for split, count in sizes:
        with open(directory / f"{split}.src", "w") as src, open(directory / f"{split}.tgt", "w") as tgt:
            for _ in range(count):
                words = [rng.choice(WORDS) for _ in range(rng.randint(2, 9))]
                src.write("reverse : " + " ".join(words) + " =\n")
                tgt.write(" ".join(reversed(words)) + "\n")


def binarize(raw_dir, dest_dir, with_mask=True):
    """fairseq-preprocess with one shared dictionary (``<mask>`` appended if asked)."""
    dictionary = Dictionary()
    for side in ("src", "tgt"):
        Dictionary.add_file_to_dictionary(str(raw_dir / f"train.{side}"), dictionary, str.split, 1)
    if with_mask:
        dictionary.add_symbol("<mask>")
    dictionary.save(str(raw_dir / "dict.txt"))
    parser = options.get_preprocessing_parser()
    args = parser.parse_args(
        [
            "-s", "src", "-t", "tgt",
            "--trainpref", str(raw_dir / "train"),
            "--validpref", str(raw_dir / "valid"),
            "--testpref", str(raw_dir / "test"),
            "--srcdict", str(raw_dir / "dict.txt"),
            "--tgtdict", str(raw_dir / "dict.txt"),
            "--destdir", str(dest_dir),
        ]
    )
    preprocess.main(args)
    return dest_dir


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    write_reversal_corpus(raw)
    return binarize(raw, tmp_path_factory.mktemp("bin"))


def training_cfg(data_dir, *extra):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser,
        [
            str(data_dir),
            "--user-dir", "diffusion_plugin",
            "--task", "prompted_translation", "-s", "src", "-t", "tgt",
            "--arch", "diffusion_xlmr_tiny",
            "--encoder-layers", "2", "--encoder-embed-dim", "32",
            "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
            "--dropout", "0", "--attention-dropout", "0",
            "--max-positions", "64", "--length-classes", "16",
            "--criterion", "masked_diffusion",
            *extra,
        ],
    )
    return convert_namespace_to_omegaconf(args)


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
