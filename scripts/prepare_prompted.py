#!/usr/bin/env python3
"""
Binarize raw parallel text for a diffusion LM that reads one sequence
``<s> prompt target </s>`` (``diffusion_plugin.tools.preprocessing``): each source line
is wrapped in a prompt template, both sides are encoded with sentencepiece and
binarized with fairseq-preprocess, with one shared dictionary that always contains
``<mask>``. All inputs are checked before anything is written, and the output is
assembled in a temporary directory that replaces --destdir at the end.
"""

import argparse
import sys

from fairseq.dataclass.utils import gen_parser_from_dataclass

from diffusion_plugin.tools.preprocessing import DEFAULT_TEMPLATE, PromptedDataConfig, SentencepieceConfig, prepare


def get_parser():
    parser = argparse.ArgumentParser(
        description="Prompt, sentencepiece-encode and binarize parallel text "
        "for a single-sequence diffusion LM (fairseq-preprocess output)."
    )
    parser.add_argument("--source-lang", default="de", help="source language suffix")
    parser.add_argument("--target-lang", default="en", help="target language suffix")
    parser.add_argument(
        "--trainpref",
        required=True,
        help="train file prefix; reads {trainpref}.{source,target}-lang",
    )
    parser.add_argument("--validpref", help="valid file prefix (optional)")
    parser.add_argument("--testpref", help="test file prefix (optional)")
    parser.add_argument(
        "--template",
        default=DEFAULT_TEMPLATE,
        help="prompt template; {src} is replaced by the source sentence",
    )
    parser.add_argument("--destdir", required=True, help="output directory")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace --destdir if it exists and is not empty",
    )
    gen_parser_from_dataclass(parser, SentencepieceConfig())
    parser.add_argument(
        "--lowercase",
        action="store_true",
        help="lowercase the corpus (not the template) before encoding",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="number of parallel workers"
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        summary = prepare(PromptedDataConfig(**vars(args)))
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"prepare_prompted.py: error: {e}")
    for split, n in summary["pairs"].items():
        print(f"{split}: {n} pairs")
    print(f"dictionary: {summary['dict_size']} symbols (incl. <mask>), written to {summary['destdir']}")
    return summary


if __name__ == "__main__":
    main()
