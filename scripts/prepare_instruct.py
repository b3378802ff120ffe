#!/usr/bin/env python3
"""
Instruction-tuning data: JSON lines ``{"inputs": ..., "targets": ...}`` (plain or
.gz) -> fairseq-binarized ``<s> inputs targets </s>`` pairs for prompted_translation.

  binarize       jsonl files -> sentencepiece pieces, left-truncated to --max-positions
                 (docs/METHOD.md §1; what is cut is counted) -> fairseq-preprocess with
                 the full vocabulary (--dict, e.g. XLM-R's dict.txt, or every piece of
                 the sentencepiece model), written atomically to --destdir
  mix            a mixture of jsonl files drawn by ratio (default: FLAN 2022's, docs/METHOD.md §7;
                 files as scripts/download_flan_2022.sh names them)
  from-parallel  parallel text + a template with {src} -> jsonl

The binarizing pieces (sentencepiece training, fairseq-preprocess, atomic output)
are diffusion_plugin/tools/preprocessing.py's; the library is
diffusion_plugin/tools/instruct_data.py.
"""

import argparse
import sys

from fairseq.dataclass.utils import gen_parser_from_dataclass

from diffusion_plugin.tools.instruct_data import SPLITS, InstructDataConfig, binarize, from_parallel, mix
from diffusion_plugin.tools.preprocessing import SentencepieceConfig


def run_from_parallel(args):
    count = from_parallel(args.src, args.tgt, args.template, args.out)
    print(f"{count} examples -> {args.out}")


def run_mix(args):
    drawn = mix(args.dir, args.examples, args.out, args.ratios, args.seed)
    print(f"{sum(drawn.values())} examples -> {args.out}: " + ", ".join(f"{n} {k}" for n, k in drawn.items()))


def run_binarize(args):
    options = {key: value for key, value in vars(args).items() if key not in ("command", "run")}
    summary = binarize(InstructDataConfig(**options))
    for split, counts in summary["splits"].items():
        print(f"{split}: {counts['examples']} examples; left-truncated {counts['truncated']} "
              f"({counts['tokens_dropped']} tokens dropped); skipped {counts['skipped_empty_target']} "
              "with an empty target")
    print(f"dictionary: {summary['dict_size']} symbols (incl. <mask>), written to {summary['destdir']}")
    return summary


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("from-parallel", help="parallel text + template -> jsonl")
    convert.add_argument("--src", required=True, help="source text, one example a line")
    convert.add_argument("--tgt", required=True, help="target text, line-aligned with --src")
    convert.add_argument("--template", required=True, help="inputs template; {src} is the source line")
    convert.add_argument("--out", required=True, help="output .jsonl or .jsonl.gz")
    convert.set_defaults(run=run_from_parallel)

    mixture = commands.add_parser("mix", help="a mixture of jsonl files drawn by ratio")
    mixture.add_argument("--dir", required=True, help="directory of the source files")
    mixture.add_argument("--ratios", help="JSON {source: weight} (default: FLAN 2022's, docs/METHOD.md §7)")
    mixture.add_argument("--examples", type=int, required=True, help="number of examples to draw")
    mixture.add_argument("--seed", type=int, default=1, help="seed of the draw")
    mixture.add_argument("--out", required=True, help="output .jsonl or .jsonl.gz")
    mixture.set_defaults(run=run_mix)

    binarizer = commands.add_parser("binarize", help="jsonl -> prompted binarized data")
    for split in SPLITS:
        binarizer.add_argument(f"--{split}", nargs="+", required=split == "train",
                               help=f"{split} jsonl files (.jsonl or .jsonl.gz), concatenated")
    binarizer.add_argument("--destdir", required=True, help="output directory")
    binarizer.add_argument("--force", action="store_true", help="replace a non-empty --destdir")
    binarizer.add_argument("--max-positions", type=int, default=512,
                           help="longest <s> inputs targets </s>; longer examples lose their "
                           "first tokens (docs/METHOD.md §1)")
    binarizer.add_argument("--source-lang", default="src", help="suffix of the inputs side")
    binarizer.add_argument("--target-lang", default="tgt", help="suffix of the targets side")
    binarizer.add_argument("--workers", type=int, default=1, help="number of parallel workers")
    gen_parser_from_dataclass(binarizer, SentencepieceConfig())
    binarizer.set_defaults(run=run_binarize)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"prepare_instruct.py: error: {e}")


if __name__ == "__main__":
    main()
