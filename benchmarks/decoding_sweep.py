#!/usr/bin/env python3
"""
Decoding strategies, steps and length candidates of one trained plugin model.

Loads a checkpoint once (by default the plugin model trained by
bench_vs_cmlm.py on Multi30k de->en) and decodes the test set with:

1. every strategy of --strategies at every K of --steps (length beam
   --length-beam), reporting sacreBLEU and sentences/s;
2. the default strategy at K = --length-steps with predicted lengths (top-k)
   and with oracle lengths, for every length beam of --length-beams.

Writes results.md (both tables), results.json and bleu_vs_steps.png (BLEU
against K, one line per strategy) to --out-dir. BLEU is sacreBLEU (13a) of the
sentencepiece-decoded hypotheses against the raw references.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, table
from benchmarks.measuring import load_model

BENCH = REPO / "work" / "bench_vs_cmlm"
STRATEGIES = [
    "reparam-uncond-deterministic-cosine",
    "reparam-cond-deterministic-cosine",
    "reparam-uncond-stochastic1.0-cosine",
    "reparam-uncond-deterministic-cosine+margin",
    "reparam-uncond-deterministic-cosine+entropy",
    "reparam-uncond-deterministic-cosine+guidance1.0",
    "mask-predict",
    "ancestral",
    "threshold0.9",
    "threshold0.7",
]


def parse_method(method):
    """'STRATEGY[+margin|+entropy|+guidance<w>]' -> DiffusionGenerator keywords."""
    strategy, *extras = method.split("+")
    options = {"decoding_strategy": strategy}
    for extra in extras:
        if extra in ("margin", "entropy"):
            options["unmasking_confidence"] = extra
        elif extra.startswith("guidance"):
            options["guidance_scale"] = float(extra[len("guidance"):])
        else:
            raise SystemExit(f"error: unknown modifier +{extra} in {method!r}")
    return options


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--checkpoint", type=Path,
                        default=BENCH / "plugin" / "checkpoints" / "checkpoint_last.pt")
    parser.add_argument("--data", type=Path, default=BENCH / "data" / "plugin-bin",
                        help="the binarized prompted data the model was trained on")
    parser.add_argument("--references", type=Path, default=None,
                        help="raw reference file (default: test_2016_flickr.en of "
                             "shared/data/multi30k above the repository)")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--source-lang", default="de")
    parser.add_argument("--target-lang", default="en")
    parser.add_argument("--test-lines", type=int, default=None,
                        help="decode the first N test sentences only")
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES,
                        help="STRATEGY[+margin|+entropy|+guidance<w>] (see --decoding-strategy)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4, 10, 20])
    parser.add_argument("--length-beam", type=int, default=3,
                        help="length candidates in the strategy table")
    parser.add_argument("--length-beams", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--length-steps", type=int, default=10,
                        help="K of the oracle-vs-predicted length table")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=REPO / "work" / "decoding_sweep")
    return parser


def find_references(args):
    if args.references is not None:
        return args.references
    for parent in REPO.parents:
        path = parent / "shared" / "data" / "multi30k" / f"test_2016_flickr.{args.target_lang}"
        if path.is_file():
            return path
    raise SystemExit("error: Multi30k references not found; pass --references FILE")


def load(args):
    if not args.checkpoint.is_file():
        raise SystemExit(f"error: {args.checkpoint} not found; train one with "
                         "python -m benchmarks.bench_vs_cmlm or pass --checkpoint")
    model, task = load_model(args.data, args.checkpoint, args.subset,
                             source_lang=args.source_lang, target_lang=args.target_lang)
    return task, model


def decode(task, model, args, options):
    """(hypotheses in test order, sentences/s, mean steps) for one generator setting."""
    import torch
    from diffusion_plugin.diffusion_generator import DiffusionGenerator

    torch.manual_seed(args.seed)
    generator = DiffusionGenerator(task.target_dictionary, max_positions=model.max_positions(),
                                   **options)
    dataset = task.dataset(args.subset)
    count = len(dataset) if args.test_lines is None else min(args.test_lines, len(dataset))
    hypotheses, steps, elapsed = {}, [], 0.0
    for start in range(0, count, args.batch_size):
        indices = range(start, min(start + args.batch_size, count))
        sample = dataset.collater([dataset[i] for i in indices])
        began = time.perf_counter()
        with torch.no_grad():
            output = generator.generate([model], sample)
        elapsed += time.perf_counter() - began
        for sample_id, hypos in zip(sample["id"].tolist(), output):
            hypotheses[sample_id] = task.target_dictionary.string(hypos[0]["tokens"], "sentencepiece")
            steps.append(hypos[0]["steps"])
    ordered = [hypotheses[i] for i in range(count)]
    return ordered, count / elapsed, sum(steps) / len(steps)


def bleu(metric, hypotheses, references):
    """sacreBLEU of the hypotheses against the first len(hypotheses) references."""
    return metric.corpus_score(hypotheses, [references[: len(hypotheses)]])


def plot(rows, steps, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(row["method"] for row in rows):
        points = sorted((r["steps"], r["bleu"]) for r in rows if r["method"] == method)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xticks(steps)
    ax.set_xticklabels([str(k) for k in steps])
    ax.set_xlabel("iterations K")
    ax.set_ylabel("sacreBLEU")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = get_parser().parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import sacrebleu
    import torch

    torch.set_num_threads(args.threads)
    metric = sacrebleu.BLEU()
    methods = {method: parse_method(method) for method in args.strategies}
    references_path = find_references(args)
    references = references_path.read_text(encoding="utf-8").splitlines()
    task, model = load(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    strategy_rows = []
    for method, options in methods.items():
        for k in args.steps:
            hyps, speed, steps = decode(task, model, args, dict(
                options, max_iter=k, beam_size=args.length_beam))
            score = bleu(metric, hyps, references)
            strategy_rows.append({"method": method, "steps": k, "bleu": round(score.score, 2),
                                  "sentences_per_s": round(speed, 2), "mean_steps": round(steps, 2)})
            print(json.dumps(strategy_rows[-1]), flush=True)
    length_rows = []
    for beam in args.length_beams:
        row = {"length_beam": beam}
        for oracle in (False, True):
            hyps, speed, _ = decode(task, model, args, dict(
                max_iter=args.length_steps, beam_size=beam, oracle_length=oracle))
            key = "oracle" if oracle else "predicted"
            row[f"{key}_bleu"] = round(bleu(metric, hyps, references).score, 2)
            row[f"{key}_sentences_per_s"] = round(speed, 2)
        length_rows.append(row)
        print(json.dumps(row), flush=True)

    signature = str(metric.get_signature())
    count = len(task.dataset(args.subset)) if args.test_lines is None else args.test_lines
    cells = []
    for method in methods:
        cells.append([f"`{method}`"])
        for k in args.steps:
            row = next(r for r in strategy_rows if r["method"] == method and r["steps"] == k)
            cells[-1] += [f"{row['bleu']:.2f}", f"{row['sentences_per_s']:.1f}"]
    strategies = table(["strategy", *[f"K={k} {what}" for k in args.steps for what in ("BLEU", "sent/s")]],
                       cells, align="l" + "r" * 2 * len(args.steps))
    lengths = table(["length beam", "predicted BLEU", "oracle BLEU", "predicted sent/s", "oracle sent/s"],
                    [[row["length_beam"], f"{row['predicted_bleu']:.2f}", f"{row['oracle_bleu']:.2f}",
                      f"{row['predicted_sentences_per_s']:.1f}", f"{row['oracle_sentences_per_s']:.1f}"]
                     for row in length_rows], align="rrrrr")
    header = (f"{args.checkpoint} on {count} sentences of {args.subset} "
              f"(references {references_path.name}); length beam {args.length_beam} in the "
              f"strategy table, K={args.length_steps} in the length table; batch "
              f"{args.batch_size}, {args.threads} thread(s), {platform.processor() or platform.machine()}.")
    markdown = "\n".join([header, f"sacreBLEU signature: `{signature}`.", "", strategies, "", lengths, ""])
    (args.out_dir / "results.md").write_text(markdown)
    (args.out_dir / "results.json").write_text(json.dumps(
        {"command": " ".join([sys.executable, *sys.argv]), "strategies": strategy_rows,
         "lengths": length_rows, "sentences": count}, indent=1))
    plot(strategy_rows, args.steps, args.out_dir / "bleu_vs_steps.png")
    print(markdown)
    print(f"wrote {args.out_dir}/results.md, results.json, bleu_vs_steps.png")


if __name__ == "__main__":
    main()
