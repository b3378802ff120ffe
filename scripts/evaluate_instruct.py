#!/usr/bin/env python3
"""
Decode few-shot instruct sets (``{"inputs", "targets"}`` JSON lines, laid out as in the
paper's data/instruct, method spec §5.3) with a diffusion_xlmr checkpoint and score them
as the paper's scorer does (spec §5.4, docs/INSTRUCT.md has the compatibility table):

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
model's positions lose their first tokens (spec §1.2). Writes a JSON report (files
read and their example counts, the rules used) and prints a table (also written next
to it as .md).
"""

import argparse
import glob
import json
import os

# family -> (the paper's split directory or None, decoding steps of the paper's eval_instruct.sh)
SETS = {
    "mmlu": ("test", 1),
    "bbh-nlp": ("validation", 1),
    "tydiqa": ("validation", 10),
    "mgsm": (None, 50),
    "iwslt14": ("test", 50),
}
DIRECTIONS = ("deen", "ende")
# the languages of the paper's tydiqa/K-shot/validation/flan2022.jsonl (its
# flan2022_index2lang.json): TyDiQA-GoldP without English (and without Japanese and
# Thai, which GoldP never had)
TYDIQA_LANGUAGES = ("arabic", "bengali", "finnish", "indonesian", "korean", "russian", "swahili", "telugu")
TYDIQA_FLAN = ("flan2022.jsonl", "flan2022_index2lang.json")
SKIPPED_FILES = ("full.jsonl",) + TYDIQA_FLAN[:1]  # concatenations of the per-group files


def _fail(message):
    raise SystemExit("evaluate_instruct.py: error: " + message)


def parse_splits(items):
    """{family: split directory} from ``FAMILY=DIR`` items over the paper's defaults."""
    splits = {family: split for family, (split, _) in SETS.items()}
    for item in items:
        family, _, split = item.partition("=")
        if family not in SETS or not split or "/" in split:
            _fail(f"--split {item!r}: use FAMILY=DIR with FAMILY one of {sorted(SETS)}")
        if SETS[family][0] is None:
            _fail(f"--split {item!r}: {family} files sit directly in its K-shot directory")
        splits[family] = split
    return splits


def set_directory(instruct_dir, name, split):
    """The directory holding set ``name``'s files; a missing one names those present."""
    family = name.split("/")[0]
    if family not in SETS or name.count("/") != 1:
        _fail(f"--sets {name!r}: use FAMILY/K-shot with FAMILY one of {sorted(SETS)}")
    directory = os.path.join(instruct_dir, name, split or "")
    if not os.path.isdir(directory):
        parent = os.path.join(instruct_dir, name)
        present = sorted(d for d in os.listdir(parent) if os.path.isdir(os.path.join(parent, d))) if (
            os.path.isdir(parent)) else []
        hint = f"; {parent} holds {present}: pass --split {family}=DIR" if present else (
            "; check --instruct-dir and the shot count")
        _fail(f"--sets {name}: {directory} is not a directory{hint}")
    return directory


def set_files(directory, family, direction, languages):
    """([(path, group or None)], languages asked for but absent): the files to read, one
    per group; group None means per-line groups (TyDiQA's flan2022_index2lang.json)."""
    if family == "iwslt14":
        files = [(os.path.join(directory, direction + ".jsonl"), direction)]
    elif family == "tydiqa" and all(os.path.exists(os.path.join(directory, f)) for f in TYDIQA_FLAN):
        files = [(os.path.join(directory, TYDIQA_FLAN[0]), None)]
    else:
        paths = sorted(glob.glob(os.path.join(directory, "*.jsonl")))
        files = [(p, os.path.basename(p)[: -len(".jsonl")].replace("_", " "))
                 for p in paths if os.path.basename(p) not in SKIPPED_FILES]
        if family == "tydiqa" and languages is not None:
            present = sorted(group for _, group in files)
            files = [(p, group) for p, group in files if group in languages]
            if not files:
                _fail(f"none of the --tydiqa-languages {' '.join(languages)} has a file in {directory}; "
                      f"it holds {present} (or pass --tydiqa-languages all)")
            return files, [lang for lang in languages if lang not in present]
    return _checked(files, directory), []


def _checked(files, directory):
    missing = [path for path, _ in files if not os.path.isfile(path)]
    if missing or not files:
        _fail(f"no instruct file {missing[0] if missing else '*.jsonl'} in {directory}; "
              "check --instruct-dir, --split and --direction")
    return files


def load_set(instruct_dir, name, split, direction, languages, max_per_file):
    """(examples [(inputs, targets, group)], files [{path, examples}], absent languages)."""
    from diffusion_plugin.data.instruct_jsonl import read_jsonl

    family = name.split("/")[0]
    directory = set_directory(instruct_dir, name, split)
    files, absent = set_files(directory, family, direction, languages)
    examples, read = [], []
    for path, group in files:
        line_groups = None
        if group is None:
            with open(os.path.join(directory, TYDIQA_FLAN[1]), encoding="utf-8") as f:
                line_groups = json.load(f)
        start = len(examples)
        try:
            for i, (inputs, targets) in enumerate(read_jsonl(path)):
                if line_groups is not None and i >= len(line_groups):
                    _fail(f"{path} has more lines than {TYDIQA_FLAN[1]} names languages")
                line_group = group or line_groups[i]
                if languages is not None and line_group not in languages:
                    continue
                if max_per_file and len(examples) - start >= max_per_file:
                    break
                examples.append((inputs, targets, line_group))
        except ValueError as e:
            _fail(str(e))
        read.append({"path": os.path.abspath(path), "examples": len(examples) - start})
    if not examples:
        _fail(f"--sets {name}: no examples in {[f['path'] for f in read]}")
    return examples, read, absent


def set_rule(family, args):
    """The comparison used for ``family``, in words (the report's ``rule``)."""
    text = ("hypothesis and reference" if args.reference_text == "roundtrip"
            else "hypothesis and raw jsonl target")
    steps = [s for s, on in (("tokenizer clean-up", args.clean_up_tokenization_spaces),
                             ("lower-cased", args.lowercase)) if on]
    prepared = f"{text} decoded{' with ' + ', '.join(steps) if steps else ''}"
    if family == "mgsm":
        return f"last {args.mgsm_rule} of {prepared}, commas removed, equal"
    if family == "iwslt14":
        return f"corpus sacreBLEU of {prepared}"
    return f"exact match of {prepared}, stripped"


def score_set(name, hyps, refs, groups, args):
    """The report entry of set ``name`` (spec §5.4) on prepared hypotheses and references."""
    from diffusion_plugin import metrics

    family = name.split("/")[0]
    if family == "iwslt14":
        entry = {"metric": "sacreBLEU", "groups": {}}
        for group in sorted(set(groups)):
            pairs = [(h, r) for h, r, g in zip(hyps, refs, groups) if g == group]
            tokenize = "13a" if group == "deen" else "intl"
            entry["groups"][group] = dict(
                metrics.bleu(*zip(*pairs), tokenize=tokenize, lowercase=args.lowercase), examples=len(pairs)
            )
        entry["score"] = sum(g["score"] for g in entry["groups"].values()) / len(entry["groups"])
        return entry
    if family == "mgsm":
        correct = metrics.number_matches(hyps, refs, args.mgsm_rule)
    else:
        correct = [h == r for h, r in zip(hyps, refs)]
    accuracy = metrics.grouped_accuracy(correct, groups)
    average = "macro" if family == "bbh-nlp" else "micro"
    kind = "exact match" if family == "tydiqa" else "accuracy"
    return {"metric": f"{kind} % ({average} over {'tasks' if average == 'macro' else 'examples'})",
            "score": accuracy[average], "groups": accuracy["groups"]}


def encode(hub, examples, max_positions):
    """(sources, targets, references): ``<s> prompt`` and ``target </s>`` token tensors,
    left-truncated to ``max_positions`` (spec §1.2), and each whole target as text after
    the tokenizer round trip (encode, decode), as the hypotheses come out."""
    import torch

    from diffusion_plugin.data.instruct_jsonl import left_truncate

    eos = torch.LongTensor([hub.task.source_dictionary.eos()])
    sources, targets, references = [], [], []
    for inputs, target, _ in examples:
        prompt = hub.binarize(hub.apply_bpe(inputs))[:-1]
        reference = hub.binarize(hub.apply_bpe(target))[:-1]  # empty for an empty target
        references.append(hub.decode(reference))
        prompt, reference, _ = left_truncate(prompt.tolist(), reference.tolist(), max_positions)
        sources.append(torch.cat([torch.LongTensor(prompt), eos]))
        targets.append(torch.cat([torch.LongTensor(reference), eos]))
    return sources, targets, references


def decode(hub, sources, targets, max_iter, length_beam, batch_size):
    """Hypotheses (text) for the encoded examples by the task's generator, in order."""
    from diffusion_plugin.pair_decoding import decode_pairs

    generator = hub.task.build_generator(hub.models, argparse.Namespace(
        iter_decode_max_iter=max_iter,
        iter_decode_with_beam=length_beam or 1,
        oracle_length=not length_beam,
    ))
    best = decode_pairs(hub.task, hub.models, generator, sources, targets, batch_size)
    return [hub.decode(hypo["tokens"]) for hypo in best]


def format_table(report):
    lines = [
        f"| set | metric | score | examples | decoding (lower-cased: {report['rules']['lowercase']}) |",
        "|---|---|---|---|---|",
    ]
    for name, entry in report["sets"].items():
        lines.append(f"| {name} | {entry['metric']} | {entry['score']:.2f} | {entry['examples']} | "
                     f"{entry['length']}, {entry['max_iter']} steps |")
        for group, scores in entry["groups"].items():
            value = scores.get("accuracy", scores.get("score"))
            lines.append(f"| {name} · {group} | | {value:.2f} | {scores['examples']} | |")
    lines.append("")
    for name, entry in report["sets"].items():
        files = ", ".join(f"{os.path.basename(f['path'])} ({f['examples']})" for f in entry["files"])
        lines.append(f"- {name} (split {entry['split'] or '-'}): {entry['rule']}; read {files}")
        if entry.get("absent_languages"):
            lines.append(f"  - languages of the paper's set not found: {', '.join(entry['absent_languages'])}")
    return "\n".join(lines) + "\n"


def get_parser():
    from diffusion_plugin.metrics import MGSM_RULES

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
    parser.add_argument("--reference-text", choices=("roundtrip", "raw"), default="roundtrip",
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
    from diffusion_plugin.files import write_atomically
    from diffusion_plugin.metrics import decoded_text

    args = get_parser().parse_args(argv)
    if not os.path.isfile(args.path):
        _fail(f"--path {args.path} does not exist; give a checkpoint file")
    if not os.path.isdir(args.instruct_dir):
        _fail(f"--instruct-dir {args.instruct_dir} is not a directory; give the root of the "
              "instruct sets (the official code's data/instruct: FAMILY/SPLIT/*.jsonl, docs/INSTRUCT.md)")
    if args.length_beam < 0 or args.max_iter < 0 or args.max_per_file < 0 or args.batch_size < 1:
        _fail("--length-beam, --max-iter and --max-per-file must be >= 0, --batch-size >= 1")
    splits = parse_splits(args.split)
    languages = None if args.tydiqa_languages == ["all"] else args.tydiqa_languages
    loaded = {}
    for name in args.sets:
        family = name.split("/")[0]
        loaded[name] = load_set(args.instruct_dir, name, splits.get(family), args.direction,
                                languages if family == "tydiqa" else None, args.max_per_file)

    from diffusion_plugin.hub_interface import from_pretrained

    hub = from_pretrained(os.path.dirname(os.path.abspath(args.path)), os.path.basename(args.path),
                          data_name_or_path=os.path.abspath(args.data)).eval()
    max_positions = min(hub.task.max_positions(), *(m.max_positions() for m in hub.models))
    length = f"length beam {args.length_beam}" if args.length_beam else "oracle length"
    rules = {key: getattr(args, key) for key in (
        "reference_text", "clean_up_tokenization_spaces", "lowercase", "mgsm_rule", "direction")}
    rules["tydiqa_languages"] = languages or "all"
    report = {"checkpoint": os.path.abspath(args.path), "rules": rules, "sets": {}}
    for name, (set_examples, files, absent) in loaded.items():
        family = name.split("/")[0]
        max_iter = args.max_iter or SETS[family][1]
        sources, targets, roundtrip = encode(hub, set_examples, max_positions)
        hyps = decode(hub, sources, targets, max_iter, args.length_beam, args.batch_size)
        refs = roundtrip if args.reference_text == "roundtrip" else [e[1] for e in set_examples]
        prepared = [[decoded_text(t, args.lowercase, args.clean_up_tokenization_spaces) for t in side]
                    for side in (hyps, refs)]
        entry = score_set(name, *prepared, [e[2] for e in set_examples], args)
        entry.update(examples=len(set_examples), split=splits.get(family), files=files,
                     rule=set_rule(family, args), length=length, max_iter=max_iter,
                     outputs=[{"hyp": h, "ref": r} for h, r in zip(prepared[0][:3], prepared[1][:3])])
        if absent:
            entry["absent_languages"] = absent
        report["sets"][name] = entry
        print(f"{name}: {entry['metric']} {entry['score']:.2f} on {len(set_examples)} examples "
              f"of {len(files)} files", flush=True)
    table = format_table(report)
    write_atomically(args.out, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_atomically(os.path.splitext(args.out)[0] + ".md", table)
    print(table, end="")
    return report


if __name__ == "__main__":
    main()
