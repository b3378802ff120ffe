#!/usr/bin/env python3
"""
Draw the denoising trajectory of a few sentences from fairseq-generate output.

Run fairseq-generate with --retain-iter-history (it prints one ``E-<id>_<step>``
line per step: the canvas with ``<mask>`` at masked positions), then:

    python scripts/plot_trajectory.py generate-test.txt --ids 0 1 2 --out trajectory.png

Each sentence becomes one panel: a row per step, a column per target position;
a cell holds the token (blank while masked) and its colour says what the step did
there: committed, kept, re-masked, replaced, or still masked.
"""

import argparse
import sys

from diffusion_plugin.tools.trajectory import draw


def get_parser():
    parser = argparse.ArgumentParser(
        description="Plot the denoising trajectory of sentences from fairseq-generate "
        "--retain-iter-history output."
    )
    parser.add_argument("generate_output", help="fairseq-generate stdout with E-<id>_<step> lines")
    parser.add_argument("--ids", type=int, nargs="+", default=None,
                        help="sentence ids to draw (default: the first three found)")
    parser.add_argument("--out", default="trajectory.png", help="output image (PNG)")
    parser.add_argument("--max-width", type=int, default=40,
                        help="draw at most this many target positions per sentence")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        ids = draw(args.generate_output, args.ids, args.out, args.max_width)
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    except ImportError:
        sys.exit("error: plotting needs matplotlib: pip install matplotlib (or .[plots])")
    print(f"wrote {args.out} ({len(ids)} sentences)")


if __name__ == "__main__":
    main()
