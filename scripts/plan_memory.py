#!/usr/bin/env python3
"""Per-GPU training memory of a diffusion_xlmr architecture under a parallel setup
(the method: ``diffusion_plugin.tools.memory_plan``).

    python scripts/plan_memory.py --arch diffusion_xlmr_xxl --gpus 8 --ddp-backend fully_sharded \\
        --precision bf16 --checkpoint-activations --max-tokens 2048 --gpu-memory 80
    python scripts/plan_memory.py --arch diffusion_xlmr_xl diffusion_xlmr_xxl --ddp-backend c10d --lora-rank 16
    python scripts/plan_memory.py --arch diffusion_xlmr_{base,large,xl,xxl} --smallest-gpus \
        --checkpoint-activations --lora-rank 16
"""

import argparse
import logging
import sys

from fairseq.dataclass.utils import gen_parser_from_dataclass

from diffusion_plugin.tools.memory_plan import ARCHS, MemorySetup, plan, setup_line, smallest_gpus_table, table


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].strip(),
        epilog="Estimates; the method is in diffusion_plugin/tools/memory_plan.py's docstring.",
        allow_abbrev=False,
    )
    parser.add_argument("--arch", nargs="+", default=["diffusion_xlmr_xxl"], choices=ARCHS,
                        help="one or more architectures (one table row each)")
    parser.add_argument("--smallest-gpus", action="store_true",
                        help="print the fewest GPUs that fit each size: full fine-tuning under FSDP "
                        "and LoRA (--lora-rank, default 16 here) under DDP")
    gen_parser_from_dataclass(parser, MemorySetup())
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup = MemorySetup(**{key: value for key, value in vars(args).items()
                           if key not in ("arch", "smallest_gpus")})
    logging.disable(logging.WARNING)
    try:
        if args.smallest_gpus:
            print(f"fewest GPUs of {setup.gpu_memory:g} GiB that fit, {setup.precision}, "
                  f"{setup.max_tokens} tokens per GPU (the other options as in the table mode)\n")
            print(smallest_gpus_table(args.arch, setup))
            return None
        rows = [plan(arch, setup) for arch in args.arch]
    except ValueError as e:
        sys.exit(f"plan_memory.py: error: {e}")
    print(f"per-GPU memory in GiB: {setup_line(setup)}\n")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
