#!/usr/bin/env python3
"""Per-GPU training memory of a diffusion_xlmr architecture under a parallel setup
(the method: ``diffusion_plugin.memory_plan``).

    python scripts/plan_memory.py --arch diffusion_xlmr_xxl --gpus 8 --ddp-backend fully_sharded \\
        --precision bf16 --checkpoint-activations --max-tokens 2048 --gpu-memory 80
    python scripts/plan_memory.py --arch diffusion_xlmr_xl diffusion_xlmr_xxl --ddp-backend c10d --lora-rank 16
    python scripts/plan_memory.py --arch diffusion_xlmr_{base,large,xl,xxl} --smallest-gpus \
        --checkpoint-activations --lora-rank 16
"""

import logging

from diffusion_plugin.memory_plan import get_parser, plan, setup_line, smallest_gpus_table, table


def main(argv=None):
    opts = get_parser().parse_args(argv)
    if opts.offload_activations and not opts.checkpoint_activations:
        raise SystemExit("--offload-activations needs --checkpoint-activations")
    logging.disable(logging.WARNING)
    if opts.smallest_gpus:
        print(f"fewest GPUs of {opts.gpu_memory:g} GiB that fit, {opts.precision}, "
              f"{opts.max_tokens} tokens per GPU (the other options as in the table mode)\n")
        print(smallest_gpus_table(opts))
        return None
    rows = [plan(arch, opts) for arch in opts.arch]
    print(f"per-GPU memory in GiB: {setup_line(opts)}\n")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
