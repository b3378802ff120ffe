#!/usr/bin/env python3
"""ROUGE-L of py-rouge itself (the paper's scorer, ``Rouge(["rouge-l"])``) against the
project's ``metrics.rouge`` (rouge-score's LCS on :class:`PyRougeTokenizer` tokens) and
rouge-score with its own stemmer, on the Gigaword test set for deterministic systems.

py-rouge 1.1 imports ``pkg_resources`` and calls nltk's punkt model, so run this in a
throwaway environment (docs/INSTRUCT.md gives the commands). nltk's ``word_tokenize``
is called with ``preserve_line=True``: the text py-rouge tokenizes holds only
``[a-z0-9 ]`` by then, so punkt would return it as one sentence anyway.
"""

import argparse
import json
import os
import runpy
from types import SimpleNamespace

import nltk
from rouge import Rouge
from rouge_score import rouge_scorer

METRICS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "diffusion_plugin", "metrics.py")


class OfflineRouge(Rouge):
    """py-rouge without the punkt download (see the module docstring)."""

    @staticmethod
    def tokenize_text(text, language="english"):
        return nltk.word_tokenize(text, language, preserve_line=True)


def systems(sources, references):
    """The outputs compared: name -> one line per example."""
    return {
        "references": list(references),
        "lead-8 (first 8 source words)": [" ".join(s.split()[:8]) for s in sources],
        "content-8 (first 8 alphabetic source words longer than 3 characters)": [
            " ".join([w for w in s.split() if w.isalpha() and len(w) > 3][:8]) for s in sources
        ],
        "source (the whole source sentence)": list(sources),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/gigaword", help="directory with test.src, test.tgt")
    args = parser.parse_args(argv)
    with open(os.path.join(args.data, "test.src"), encoding="utf-8") as f:
        sources = f.read().splitlines()
    with open(os.path.join(args.data, "test.tgt"), encoding="utf-8") as f:
        references = f.read().splitlines()
    metrics = SimpleNamespace(**runpy.run_path(METRICS))  # this checkout's metrics.py alone (the package imports torch)
    py_rouge = OfflineRouge(["rouge-l"])
    stemmed = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rows = []
    print("| system | py-rouge ROUGE-L | project (py-rouge tokens) | difference | rouge-score stemmer | difference |")
    print("|---|---|---|---|---|---|")
    for name, hyps in systems(sources, references).items():
        official = 100 * py_rouge.get_scores(hyps, [[r] for r in references])["rouge-l"]["f"]
        project = metrics.rouge(hyps, references)["rougeL"]
        rouge_score = 100 * sum(stemmed.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, references)) / len(hyps)
        rows.append(dict(system=name, py_rouge=official, project=project, rouge_score_stemmer=rouge_score))
        print(f"| {name} | {official:.4f} | {project:.4f} | {project - official:+.4f} | "
              f"{rouge_score:.4f} | {rouge_score - official:+.4f} |")
    print(json.dumps({"examples": len(references), "rows": rows}))
    return rows


if __name__ == "__main__":
    main()
