#!/usr/bin/env python3
"""
Decode few-shot instruct sets (``{"inputs", "targets"}`` JSON lines, laid out as in the
paper's data/instruct, docs/METHOD.md §7) with a diffusion_xlmr checkpoint and score them
as the paper's scorer does (docs/METHOD.md §7, docs/INSTRUCT.md has the compatibility table):

  mmlu/K-shot     accuracy, micro over questions, and per subject   (default 1 step)
  bbh-nlp/K-shot  accuracy, macro over tasks, and per task          (1 step)
  tydiqa/K-shot   exact match over all questions, and per language (10 steps)
  mgsm/K-shot     the last integer of the output (commas removed) against the gold one,
                  per language and over all                        (50 steps)
  iwslt14/K-shot  sacreBLEU: tokenize 13a for de->en, intl for en->de (50 steps)

Splits (``--split FAMILY=DIR``) default to the paper's: MMLU and IWSLT14 ``test``, BBH-NLP
and TyDiQA ``validation``; IWSLT14 reads ``--direction`` (``deen``). TyDiQA scores the
paper's 8 languages (its ``flan2022.jsonl`` when present). Both sides are compared as
the paper's decode leaves them: the reference goes through the same tokenizer round
trip as the hypothesis, transformers' clean-up of tokenization spaces, lower-casing.

Decoding is the plugin's: the checkpoint is loaded with the hub interface
(``from_pretrained``), batches go through the task's DiffusionGenerator with the
oracle length (the target's, which may be 0) or a length beam. Prompts longer than the
model's positions lose their first tokens (docs/METHOD.md §1). Writes a JSON report (files
read and their example counts, the rules used) and prints a table (also written next
to it as .md).
"""

import argparse
import json
import os
import sys

from diffusion_plugin.metrics import MGSM_RULES, REFERENCE_TEXTS, InstructRules
from diffusion_plugin.tools.files import write_atomically
from diffusion_plugin.tools.instruct_eval import DIRECTIONS, SETS, TYDIQA_LANGUAGES, evaluate, format_table


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--path", required=True, help="checkpoint file (e.g. checkpoints/x/checkpoint_last.pt)")
    parser.add_argument("--data", required=True,
                        help="the binarized data directory of the run (dictionary, sentencepiece.bpe.model)")
    parser.add_argument("--instruct-dir", default=os.path.join("data", "instruct"),
                        help="root of the instruct sets (the official code's data/instruct layout)")
    parser.add_argument("--sets", nargs="+", required=True,
                        help="sets to decode, FAMILY/K-shot with FAMILY in " + ", ".join(SETS))
    parser.add_argument("--split", nargs="+", default=[], metavar="FAMILY=DIR",
                        help="the directory under FAMILY/K-shot to read (default: the paper's, "
                        + ", ".join(f"{f}={s}" for f, (s, _) in SETS.items() if s) + ")")
    parser.add_argument("--direction", choices=DIRECTIONS, default="deen",
                        help="IWSLT14 file: deen (the paper's Table 8, sacreBLEU 13a) or ende (intl)")
    parser.add_argument("--tydiqa-languages", nargs="+", default=list(TYDIQA_LANGUAGES),
                        help="TyDiQA languages scored (default: the paper's 8); 'all' for every file")
    parser.add_argument("--max-per-file", type=int, default=0,
                        help="decode only the first N examples of each file (0: all)")
    parser.add_argument("--length-beam", type=int, default=0,
                        help="candidate lengths from the length head (0: the oracle length, the target's)")
    parser.add_argument("--max-iter", type=int, default=0,
                        help="decoding steps for every set (0: per set, as the paper's eval_instruct.sh)")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per batch")
    parser.add_argument("--reference-text", choices=REFERENCE_TEXTS, default="roundtrip",
                        help="compare with the target after the tokenizer round trip (the paper's) or "
                        "with the raw jsonl target")
    parser.add_argument("--clean-up-tokenization-spaces", action=argparse.BooleanOptionalAction, default=True,
                        help="remove spaces before punctuation and clitics (it 's -> it's) on both sides, "
                        "as the paper's transformers decode does")
    parser.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=True,
                        help="lower-case hypotheses and references before comparing (the paper does)")
    parser.add_argument("--mgsm-rule", choices=MGSM_RULES, default="integer",
                        help="MGSM answer: the last unsigned integer (the paper's) or the last signed "
                        "decimal number (18.0 equals 18)")
    parser.add_argument("--out", required=True, help="JSON report; the table goes to the same name .md")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    rules = InstructRules(args.reference_text, args.clean_up_tokenization_spaces, args.lowercase, args.mgsm_rule)
    try:
        report = evaluate(
            args.path, args.data, args.instruct_dir, args.sets, args.split, args.direction,
            None if args.tydiqa_languages == ["all"] else args.tydiqa_languages, args.max_per_file,
            args.length_beam, args.max_iter, args.batch_size, rules, progress=lambda line: print(line, flush=True),
        )
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"evaluate_instruct.py: error: {e}")
    table = format_table(report)
    write_atomically(args.out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_atomically(os.path.splitext(args.out)[0] + ".md", table)
    print(table, end="")
    return report


if __name__ == "__main__":
    main()
