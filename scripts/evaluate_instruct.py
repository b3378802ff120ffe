#!/usr/bin/env python3
"""
Decode few-shot instruct sets (``{"inputs", "targets"}`` JSON lines, laid out as in
../shared/data/instruct, method spec §5.3) with a diffusion_xlmr checkpoint and score
them (spec §5.4):

  mmlu/K-shot     accuracy, micro over questions, and per subject   (default 1 step)
  bbh-nlp/K-shot  accuracy, macro over tasks, and per task          (1 step)
  tydiqa/K-shot   exact match over all questions, and per language (10 steps)
  mgsm/K-shot     the last number of the output (commas removed) against the gold one,
                  per language and over all                        (50 steps)
  iwslt14/K-shot  sacreBLEU: tokenize 13a for de->en files, intl for en->de (50 steps)

Decoding is the plugin's: the checkpoint is loaded with the hub interface
(``from_pretrained``), batches go through the task's DiffusionGenerator with the
oracle length (the target's) or a length beam. Prompts longer than the model's
positions lose their first tokens (spec §1.2). Comparisons are lower-cased unless
--no-lowercase (the paper lower-cases; the report says which). Writes a JSON report
and prints a table (also written next to it as .md).
"""

import argparse
import glob
import json
import os
import sys

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(SCRIPTS))  # this checkout's diffusion_plugin

# set -> (file pattern under the K-shot directory, decoding steps of the paper's eval_instruct.sh)
SETS = {
    "mmlu": ("val/*.jsonl", 1),
    "bbh-nlp": ("validation/*.jsonl", 1),
    "tydiqa": ("validation/*.jsonl", 10),
    "mgsm": ("*.jsonl", 50),
    "iwslt14": ("validation/*.jsonl", 50),
}
SKIPPED_FILES = ("full.jsonl",)  # MMLU's concatenation of its subject files


def _fail(message):
    raise SystemExit("evaluate_instruct.py: error: " + message)


def set_files(instruct_dir, name):
    """The jsonl files of set ``name`` ('mmlu/0-shot', ...), one per group, sorted."""
    family = name.split("/")[0]
    if family not in SETS or name.count("/") != 1:
        _fail(f"--sets {name!r}: use FAMILY/K-shot with FAMILY one of {sorted(SETS)}")
    pattern = os.path.join(instruct_dir, name, SETS[family][0])
    files = sorted(f for f in glob.glob(pattern) if os.path.basename(f) not in SKIPPED_FILES)
    if not files:
        _fail(f"--sets {name}: no files match {pattern}; check --instruct-dir and the shot count")
    return files


def load_set(instruct_dir, name, max_per_file):
    """(inputs, targets, group) of set ``name``: the first ``max_per_file`` of each file."""
    from diffusion_plugin.data.instruct_jsonl import read_jsonl

    examples = []
    for path in set_files(instruct_dir, name):
        group = os.path.basename(path)[: -len(".jsonl")].replace("_", " ")
        try:
            for i, (inputs, targets) in enumerate(read_jsonl(path)):
                if max_per_file and i >= max_per_file:
                    break
                examples.append((inputs, targets, group))
        except ValueError as e:
            _fail(str(e))
    return examples


def score_set(name, hyps, refs, groups, lowercase):
    """The report entry of set ``name`` (spec §5.4)."""
    from diffusion_plugin import metrics

    family = name.split("/")[0]
    if family == "iwslt14":
        entry = {"metric": "sacreBLEU", "groups": {}}
        for group in sorted(set(groups)):
            pairs = [(h, r) for h, r, g in zip(hyps, refs, groups) if g == group]
            tokenize = "13a" if "deen" in group.replace(" ", "") else "intl"
            entry["groups"][group] = dict(
                metrics.bleu(*zip(*pairs), tokenize=tokenize, lowercase=lowercase), examples=len(pairs)
            )
        entry["score"] = sum(g["score"] for g in entry["groups"].values()) / len(entry["groups"])
        return entry
    if family == "mgsm":
        correct = metrics.number_matches(hyps, refs)
    else:
        correct = metrics.exact_matches(hyps, refs, lowercase)
    accuracy = metrics.grouped_accuracy(correct, groups)
    average = "macro" if family == "bbh-nlp" else "micro"
    kind = "exact match" if family == "tydiqa" else "accuracy"
    return {"metric": f"{kind} % ({average} over {'tasks' if average == 'macro' else 'examples'})",
            "score": accuracy[average], "groups": accuracy["groups"]}


def decode(hub, examples, max_iter, length_beam, batch_size):
    """Hypotheses (text) for ``examples`` by the task's generator, in order."""
    import torch
    from fairseq.data import LanguagePairDataset

    from diffusion_plugin.data.instruct_jsonl import left_truncate
    from diffusion_plugin.data.prompted_pair_dataset import PromptedPairDataset

    task, dictionary = hub.task, hub.task.source_dictionary
    max_positions = min(task.max_positions(), *(m.max_positions() for m in hub.models))
    eos = torch.LongTensor([dictionary.eos()])
    sources, targets = [], []
    for inputs, target, _ in examples:
        prompt = hub.binarize(hub.apply_bpe(inputs))[:-1]
        reference = hub.binarize(hub.apply_bpe(target))[:-1]
        prompt, reference, _ = left_truncate(prompt.tolist(), reference.tolist(), max_positions)
        sources.append(torch.cat([torch.LongTensor(prompt), eos]))
        targets.append(torch.cat([torch.LongTensor(reference), eos]))
    pairs = LanguagePairDataset(
        sources, [len(s) for s in sources], dictionary, targets, [len(t) for t in targets], dictionary,
        left_pad_source=False, left_pad_target=False, shuffle=False,
    )
    dataset = PromptedPairDataset(pairs, max_positions, training=False)
    batches = task.get_batch_iterator(
        dataset, max_sentences=batch_size, max_positions=max_positions
    ).next_epoch_itr(shuffle=False)
    generator = task.build_generator(hub.models, argparse.Namespace(
        iter_decode_max_iter=max_iter,
        iter_decode_with_beam=length_beam or 1,
        oracle_length=not length_beam,
    ))
    hyps = [None] * len(examples)
    for sample in batches:
        for index, hypos in zip(sample["id"].tolist(), task.inference_step(generator, hub.models, sample)):
            hyps[index] = hub.decode(hypos[0]["tokens"])
    return hyps


def format_table(report):
    lines = [
        f"| set | metric | score | examples | decoding (lower-cased: {report['lowercase']}) |",
        "|---|---|---|---|---|",
    ]
    for name, entry in report["sets"].items():
        lines.append(f"| {name} | {entry['metric']} | {entry['score']:.2f} | {entry['examples']} | "
                     f"{entry['length']}, {entry['max_iter']} steps |")
        for group, scores in entry["groups"].items():
            value = scores.get("accuracy", scores.get("score"))
            lines.append(f"| {name} · {group} | | {value:.2f} | {scores['examples']} | |")
    return "\n".join(lines) + "\n"


def write_atomically(path, text):
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(partial, path)


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--path", required=True, help="checkpoint file (e.g. checkpoints/x/checkpoint_last.pt)")
    parser.add_argument("--data", required=True,
                        help="the binarized data directory of the run (dictionary, sentencepiece.bpe.model)")
    parser.add_argument("--instruct-dir", default="../shared/data/instruct", help="root of the instruct sets")
    parser.add_argument("--sets", nargs="+", required=True,
                        help="sets to decode, FAMILY/K-shot with FAMILY in " + ", ".join(SETS))
    parser.add_argument("--max-per-file", type=int, default=0,
                        help="decode only the first N examples of each file (0: all)")
    parser.add_argument("--length-beam", type=int, default=0,
                        help="candidate lengths from the length head (0: the oracle length, the target's)")
    parser.add_argument("--max-iter", type=int, default=0,
                        help="decoding steps for every set (0: per set, as the paper's eval_instruct.sh)")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per batch")
    parser.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=True,
                        help="lower-case hypotheses and references before comparing (the paper does)")
    parser.add_argument("--out", required=True, help="JSON report; the table goes to the same name .md")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    if not os.path.isfile(args.path):
        _fail(f"--path {args.path} does not exist; give a checkpoint file")
    if not os.path.isdir(args.instruct_dir):
        _fail(f"--instruct-dir {args.instruct_dir} is not a directory")
    if args.length_beam < 0 or args.max_iter < 0 or args.max_per_file < 0 or args.batch_size < 1:
        _fail("--length-beam, --max-iter and --max-per-file must be >= 0, --batch-size >= 1")
    examples = {name: load_set(args.instruct_dir, name, args.max_per_file) for name in args.sets}

    from diffusion_plugin.hub_interface import from_pretrained

    hub = from_pretrained(os.path.dirname(os.path.abspath(args.path)), os.path.basename(args.path),
                          data_name_or_path=os.path.abspath(args.data)).eval()
    length = f"length beam {args.length_beam}" if args.length_beam else "oracle length"
    report = {"checkpoint": os.path.abspath(args.path), "lowercase": args.lowercase, "sets": {}}
    for name, set_examples in examples.items():
        max_iter = args.max_iter or SETS[name.split("/")[0]][1]
        hyps = decode(hub, set_examples, max_iter, args.length_beam, args.batch_size)
        refs = [e[1] for e in set_examples]
        entry = score_set(name, hyps, refs, [e[2] for e in set_examples], args.lowercase)
        entry.update(examples=len(set_examples), length=length, max_iter=max_iter,
                     outputs=[{"hyp": h, "ref": r} for h, r in zip(hyps[:3], refs[:3])])
        report["sets"][name] = entry
        print(f"{name}: {entry['metric']} {entry['score']:.2f} on {len(set_examples)} examples", flush=True)
    table = format_table(report)
    write_atomically(args.out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_atomically(os.path.splitext(args.out)[0] + ".md", table)
    print(table, end="")
    return report


if __name__ == "__main__":
    main()
