#!/usr/bin/env python3
"""

import argparse
import os
import sys

from diffusion_plugin.tools.multi30k_download import BASE_URL, download


def get_parser():
    parser = argparse.ArgumentParser(description="Download Multi30k de-en (task 1 and task 2's monolingual train text).")
    parser.add_argument("--outdir", default=os.path.join("data", "multi30k"), help="where to write the files")
    parser.add_argument("--base-url", default=BASE_URL,
                        help="the repository's data/ folder (a mirror, or file:///path/to/dataset/data)")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        download(args.outdir, args.base_url)
    except (ConnectionError, ValueError) as error:
        sys.exit(f"download_multi30k.py: error: {error}")
    print(f"Multi30k de-en in {args.outdir}")


if __name__ == "__main__":
    main()
