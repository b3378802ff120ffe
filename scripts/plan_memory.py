#!/usr/bin/env python3
"""Per-GPU training memory of a diffusion_xlmr architecture under a parallel setup
(the method: ``diffusion_plugin.memory_plan``).

    python scripts/plan_memory.py --arch diffusion_xlmr_xxl --gpus 8 --ddp-backend fully_sharded \\
        --precision bf16 --checkpoint-activations --max-tokens 2048 --gpu-memory 80
"""

import logging

from diffusion_plugin.memory_plan import get_parser, plan, setup_line, table


def main(argv=None):
    opts = get_parser().parse_args(argv)
    if opts.offload_activations and not opts.checkpoint_activations:
        raise SystemExit("--offload-activations needs --checkpoint-activations")
    logging.disable(logging.WARNING)
    rows = [plan(arch, opts) for arch in opts.arch]
    print(f"per-GPU memory in GiB: {setup_line(opts)}\n")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
