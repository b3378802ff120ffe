#!/usr/bin/env python3
"""
Generate a seeded synthetic translation corpus (languages ``src`` and ``tgt``): the
grammar and its translation are described in diffusion_plugin/tools/synthetic_corpus.py
and in the README.txt written beside the corpus.
"""

import argparse
import sys

from diffusion_plugin.tools.synthetic_corpus import SPLITS, write_corpus


def get_parser():
    parser = argparse.ArgumentParser(
        description="Write a seeded synthetic src->tgt translation corpus "
        "({train,valid,test}.{src,tgt} and README.txt)."
    )
    parser.add_argument("--outdir", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument(
        "--train", type=int, default=20000, help="number of training pairs"
    )
    parser.add_argument(
        "--valid", type=int, default=500, help="number of validation pairs"
    )
    parser.add_argument("--test", type=int, default=500, help="number of test pairs")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        lex, splits = write_corpus(args.outdir, args.seed, {name: getattr(args, name) for name in SPLITS})
    except ValueError as e:
        sys.exit("error: {}".format(e))

    src_lex, tgt_lex = lex.sizes()
    train_vocab = [
        len({w for pair in splits[0] for w in pair[side].split()}) for side in (0, 1)
    ]
    for name, pairs in zip(SPLITS, splits):
        src_len = sum(len(p[0].split()) for p in pairs) / len(pairs)
        tgt_len = sum(len(p[1].split()) for p in pairs) / len(pairs)
        print(
            "{}: {} pairs, mean length src {:.1f} / tgt {:.1f} words".format(
                name, len(pairs), src_len, tgt_len
            )
        )
    print(
        "lexicon: {} src / {} tgt word types; seen in train: {} src / {} tgt".format(
            src_lex, tgt_lex, train_vocab[0], train_vocab[1]
        )
    )
    print("wrote {}".format(args.outdir))


if __name__ == "__main__":
    main()
