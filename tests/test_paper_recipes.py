"""examples/paper/train.sh: its commands (DRY_RUN=1) hold the paper's settings and
parse with fairseq's own parser."""

import shlex

import pytest
from fairseq import options

from conftest import run


def dry_run(task, size, tmp_path):
    result = run(["bash", "examples/paper/train.sh", task, size, tmp_path / "xlmr", tmp_path], env={"DRY_RUN": "1"})
    return [shlex.split(line) for line in result.stdout.splitlines()]


def parse(command):
    assert command[0] == "fairseq-train"
    return options.parse_args_and_arch(options.get_training_parser(), command[1:])


@pytest.mark.parametrize(
    "task, size, max_update, lr, batch",
    [
        ("iwslt14", "base", 150000, 5e-5, ("max_tokens", 4096, 1)),  # 32K tokens on 8 GPUs
        ("wmt14", "large", 300000, 5e-5, ("max_tokens", 4096, 4)),  # 128K tokens
        ("gigaword10k", "xl", 5000, 5e-5, ("max_tokens", 4096, 1)),  # 16K tokens
        ("flan2022", "base", 70000, 1e-5, ("batch_size", 2, 32)),  # 512 sequences
        ("flan2022", "xxl", 4000, 1e-5, ("batch_size", 2, 128)),  # 2048 sequences
    ],
)
def test_paper_settings(task, size, max_update, lr, batch, tmp_path):
    commands = dry_run(task, size, tmp_path)
    args = parse(commands[-1])
    assert args.max_update == max_update and args.lr == [lr]
    assert args.warmup_updates == max_update // 100 and args.weight_decay == 0.01 and args.clip_norm == 1.0
    name, per_gpu, update_freq = batch
    assert getattr(args, name) == per_gpu and args.update_freq == [update_freq]
    assert args.arch == f"diffusion_xlmr_{size}" and args.max_positions == 512
    if size == "xxl":
        assert commands[0][:2] == ["python", "scripts/convert_pretrained.py"]
        assert args.ddp_backend == "fully_sharded" and "--data" not in commands[0]
    else:
        assert args.pretrained_vocab == ("full" if task == "flan2022" else "prune")
