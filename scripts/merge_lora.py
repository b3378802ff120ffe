#!/usr/bin/env python3
"""Merge the LoRA adapters of a checkpoint trained with ``--lora-rank R`` into a plain one
(``diffusion_plugin.tools.lora_merge``).

    python scripts/merge_lora.py checkpoints/lora/checkpoint_best.pt checkpoints/lora/merged.pt
"""

import argparse
import sys

from diffusion_plugin.tools.lora_merge import merge_checkpoint


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("checkpoint", help="a checkpoint trained with --lora-rank > 0")
    parser.add_argument("output", help="where the merged checkpoint goes (a .pt file)")
    parser.add_argument("--data", help="the binarized data directory (default: the one the checkpoint records)")
    return parser


def main(argv=None):
    opts = get_parser().parse_args(argv)
    try:
        merged = merge_checkpoint(opts.checkpoint, opts.output, opts.data)
    except ValueError as e:
        sys.exit(f"merge_lora.py: error: {e}")
    print(f"merged {merged} adapted projections into {opts.output}")


if __name__ == "__main__":
    main()
