#!/usr/bin/env python3
"""ROUGE-1/2/L F1 of fairseq-generate output: its D- (detokenized hypothesis) lines
against its T- (reference) lines, by default on py-rouge's words (the paper's
Gigaword scorer: lower-cased, stemmed; docs/INSTRUCT.md); run fairseq-generate with
--post-process sentencepiece so that both are plain text. Prints one JSON line."""

import argparse
import json
import re

from diffusion_plugin.metrics import ROUGE_TOKENIZERS, rouge

LINE = re.compile(r"^([DT])-(\d+)\t(.*)$")


def read_generate_output(path):
    """(hypotheses, references) of a fairseq-generate output, ordered by example id;
    the D- line holds score and text (``D-id\\tscore\\ttext``)."""
    hyps, refs = {}, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = LINE.match(line.rstrip("\n"))
            if match is None:
                continue
            kind, index, rest = match.groups()
            if kind == "D":
                hyps.setdefault(int(index), rest.split("\t", 1)[1] if "\t" in rest else "")
            else:
                refs[int(index)] = rest
    if not refs or set(hyps) != set(refs):
        raise SystemExit(
            f"score_rouge.py: error: {path} holds {len(hyps)} D- and {len(refs)} T- lines for "
            "different examples; give the stdout of fairseq-generate on a split with references"
        )
    order = sorted(refs)
    return [hyps[i] for i in order], [refs[i] for i in order]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("generate_output", help="stdout of fairseq-generate")
    parser.add_argument("--tokenizer", choices=ROUGE_TOKENIZERS, default="py-rouge",
                        help="words compared: py-rouge's (stemmed, the paper's) or rouge-score's (unstemmed)")
    args = parser.parse_args(argv)
    hyps, refs = read_generate_output(args.generate_output)
    scores = dict(rouge(hyps, refs, args.tokenizer), examples=len(hyps), tokenizer=args.tokenizer)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in scores.items()}))
    return scores


if __name__ == "__main__":
    main()
