#!/usr/bin/env python3
"""ROUGE-1/2/L F1 (rouge-score) of fairseq-generate output: its D- (detokenized
hypothesis) lines against its T- (reference) lines; run fairseq-generate with
--post-process sentencepiece so that both are plain text. Prints one JSON line."""

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout

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
    args = parser.parse_args(argv)
    from diffusion_plugin.metrics import rouge

    hyps, refs = read_generate_output(args.generate_output)
    scores = dict(rouge(hyps, refs), examples=len(hyps))
    print(json.dumps({k: round(v, 2) for k, v in scores.items()}))
    return scores


if __name__ == "__main__":
    main()
