"""Helpers the tests share: the tiny corpus and its binarization, the tiny training
configuration, running fairseq commands and scripts, saving a checkpoint."""

import os
import random
import subprocess
import sys
from pathlib import Path

from fairseq import options, tasks
from fairseq.data import Dictionary
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.trainer import Trainer
from fairseq_cli import preprocess

import diffusion_plugin  # noqa: F401  (registers the plugin's components)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORDS = [f"w{i}" for i in range(30)]
SCRIPTS = ROOT / "scripts"
TASK_ARGS = ["--user-dir", "diffusion_plugin", "--task", "prompted_translation", "-s", "src", "-t", "tgt"]
TINY_ARGS = [
    *TASK_ARGS,
    "--arch", "diffusion_xlmr_tiny",
    "--encoder-layers", "2", "--encoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
    "--max-positions", "64", "--length-classes", "16",
    "--criterion", "masked_diffusion",
]


def run(command, ok=True, env=None, **kwargs):
    """Run ``command`` in the repository root on one thread, with ``env`` added to the
    environment; assert it succeeds (or, with ``ok=False``, fails)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **(env or {}))
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    env.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    command = [str(part) for part in command]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, **kwargs)
    assert (result.returncode == 0) == ok, (
        f"{command[0]} exited with {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def batch(task, indices, split="test"):
    """A collated batch of examples ``indices`` of a loaded split."""
    dataset = task.dataset(split)
    return dataset.collater([dataset[i] for i in indices])


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


def parse_training_args(*argv):
    parser = options.get_training_parser()
    return convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, [str(a) for a in argv]))


def training_cfg(data_dir, *extra):
    return parse_training_args(data_dir, *TINY_ARGS, "--dropout", "0", "--attention-dropout", "0", *extra)


def save_checkpoint(cfg, path):
    """Save an untrained model of ``cfg`` (which names an optimizer) as fairseq-train would."""
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    trainer.consolidate_optimizer()
    trainer.save_checkpoint(str(path), {})
    return path
