"""The same checkpoint, --seed and flags give byte-identical fairseq-generate output.

fairseq-generate seeds torch only when --seed is given; the stochastic strategies
draw from that seeded generator, so another seed changes their output. Each case
runs fairseq-generate as a command and twice more in this process (its output
written with --results-path).
"""

import re
import sys

import pytest
from fairseq_cli import generate

from helpers import BIN, TASK_ARGS, run, save_checkpoint, training_cfg
from diffusion_plugin.strategies import example_strategies

pytestmark = pytest.mark.slow  # fairseq-generate runs (subprocesses)

FLAGS = {
    "deterministic": ["--decoding-strategy", "reparam-uncond-deterministic-cosine"],
    **{name: ["--decoding-strategy", name] for name in example_strategies(random=True)},
    "sampling": ["--sampling", "--temperature", "0.7", "--beam", "1"],
}
"""The default, every random strategy of the registry and sampling."""


@pytest.fixture(scope="module")
def checkpoint(tiny_data, tmp_path_factory):
    cfg = training_cfg(tiny_data, "--optimizer", "adam", "--lr", "1e-3")
    return save_checkpoint(cfg, tmp_path_factory.mktemp("ckpt") / "model.pt")


def generate_in_process(argv, results, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["fairseq-generate", *argv, "--results-path", str(results)])
    generate.cli_main()
    return (results / "generate-test.txt").read_text()


@pytest.mark.parametrize("name", FLAGS)
def test_same_seed_gives_byte_identical_output(tiny_data, checkpoint, name, tmp_path, monkeypatch):
    argv = [
        str(tiny_data), *TASK_ARGS, "--path", str(checkpoint), "--gen-subset", "test",
        "--iter-decode-max-iter", "5", "--iter-decode-with-beam", "2", "--batch-size", "7",
        "--num-workers", "0", "--no-progress-bar", *FLAGS[name],
    ]
    command = run([BIN / "fairseq-generate", *argv, "--seed", "3"], env={"LOGLEVEL": "WARNING"}).stdout
    assert len(re.findall(r"^H-\d+\t", command, re.M)) == 30
    assert generate_in_process([*argv, "--seed", "3"], tmp_path / "same", monkeypatch) == command
    other_seed = generate_in_process([*argv, "--seed", "4"], tmp_path / "other", monkeypatch)
    assert (other_seed == command) == (name == "deterministic")
