"""The instruct evaluation of ``scripts/evaluate_instruct.py``: few-shot sets laid out as
the paper's ``data/instruct`` (docs/METHOD.md §7), decoded with a diffusion_xlmr checkpoint
and scored by :func:`diffusion_plugin.metrics.score_instruct_set` (docs/METHOD.md §7)."""

import glob
import json
import os
from types import SimpleNamespace

from diffusion_plugin.metrics import INSTRUCT_FAMILIES, InstructRules, score_instruct_set

# family -> (the paper's split directory or None, decoding steps of the paper's eval_instruct.sh)
SETS = dict(zip(INSTRUCT_FAMILIES, (("test", 1), ("validation", 1), ("validation", 10), (None, 50), ("test", 50))))
DIRECTIONS = ("deen", "ende")
# the languages of the paper's tydiqa/K-shot/validation/flan2022.jsonl (its
# flan2022_index2lang.json): TyDiQA-GoldP without English (and without Japanese and
# Thai, which GoldP never had)
TYDIQA_LANGUAGES = ("arabic", "bengali", "finnish", "indonesian", "korean", "russian", "swahili", "telugu")
TYDIQA_FLAN = ("flan2022.jsonl", "flan2022_index2lang.json")
SKIPPED_FILES = ("full.jsonl",) + TYDIQA_FLAN[:1]  # concatenations of the per-group files


def parse_splits(items):
    """{family: split directory} from ``FAMILY=DIR`` items over the paper's defaults."""
    splits = {family: split for family, (split, _) in SETS.items()}
    for item in items:
        family, _, split = item.partition("=")
        if family not in SETS or not split or "/" in split:
            raise ValueError(f"--split {item!r}: use FAMILY=DIR with FAMILY one of {sorted(SETS)}")
        if SETS[family][0] is None:
            raise ValueError(f"--split {item!r}: {family} files sit directly in its K-shot directory")
        splits[family] = split
    return splits


def set_directory(instruct_dir, name, split):
    """The directory holding set ``name``'s files; a missing one names those present."""
    family = name.split("/")[0]
    if family not in SETS or name.count("/") != 1:
        raise ValueError(f"--sets {name!r}: use FAMILY/K-shot with FAMILY one of {sorted(SETS)}")
    directory = os.path.join(instruct_dir, name, split or "")
    if not os.path.isdir(directory):
        parent = os.path.join(instruct_dir, name)
        present = sorted(d for d in os.listdir(parent) if os.path.isdir(os.path.join(parent, d))) if (
            os.path.isdir(parent)) else []
        hint = f"; {parent} holds {present}: pass --split {family}=DIR" if present else (
            "; check --instruct-dir and the shot count")
        raise FileNotFoundError(f"--sets {name}: {directory} is not a directory{hint}")
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
                raise FileNotFoundError(
                    f"none of the --tydiqa-languages {' '.join(languages)} has a file in {directory}; "
                    f"it holds {present} (or pass --tydiqa-languages all)")
            return files, [lang for lang in languages if lang not in present]
    return _checked(files, directory), []


def _checked(files, directory):
    missing = [path for path, _ in files if not os.path.isfile(path)]
    if missing or not files:
        raise FileNotFoundError(f"no instruct file {missing[0] if missing else '*.jsonl'} in {directory}; "
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
        for i, (inputs, targets) in enumerate(read_jsonl(path)):
            if line_groups is not None and i >= len(line_groups):
                raise ValueError(f"{path} has more lines than {TYDIQA_FLAN[1]} names languages")
            line_group = group or line_groups[i]
            if languages is not None and line_group not in languages:
                continue
            if max_per_file and len(examples) - start >= max_per_file:
                break
            examples.append((inputs, targets, line_group))
        read.append({"path": os.path.abspath(path), "examples": len(examples) - start})
    if not examples:
        raise ValueError(f"--sets {name}: no examples in {[f['path'] for f in read]}")
    return examples, read, absent


def encode(hub, examples, max_positions):
    """(sources, targets, references): ``<s> prompt`` and ``target </s>`` token tensors,
    left-truncated to ``max_positions`` (docs/METHOD.md §1), and each whole target as text after
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

    generator = hub.task.build_generator(hub.models, SimpleNamespace(
        iter_decode_max_iter=max_iter,
        iter_decode_with_beam=length_beam or 1,
        oracle_length=not length_beam,
    ))
    best = decode_pairs(hub.task, hub.models, generator, sources, targets, batch_size)
    return [hub.decode(hypo["tokens"]) for hypo in best]


def evaluate(path, data, instruct_dir, sets, splits=(), direction="deen", tydiqa_languages=TYDIQA_LANGUAGES,
             max_per_file=0, length_beam=0, max_iter=0, batch_size=16, rules=InstructRules(), progress=None):
    """Decode and score ``sets`` (``FAMILY/K-shot`` names under ``instruct_dir``) with the
    checkpoint ``path`` and its binarized ``data`` directory: the report (a dict of the
    checkpoint, the rules and one entry per set). ``splits``: ``FAMILY=DIR`` items over
    the paper's split directories; ``tydiqa_languages`` None: every TyDiQA file;
    ``length_beam`` 0: the oracle length; ``max_iter`` 0: each family's steps of the
    paper; ``progress``: called with one line per scored set. Every set is read before
    the model is loaded, so that a bad one fails fast."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--path {path} does not exist; give a checkpoint file")
    if not os.path.isdir(instruct_dir):
        raise FileNotFoundError(f"--instruct-dir {instruct_dir} is not a directory; give the root of the "
                                "instruct sets (the paper's data/instruct layout: FAMILY/K-shot/SPLIT/*.jsonl, docs/INSTRUCT.md)")
    if length_beam < 0 or max_iter < 0 or max_per_file < 0 or batch_size < 1:
        raise ValueError("--length-beam, --max-iter and --max-per-file must be >= 0, --batch-size >= 1")
    if direction not in DIRECTIONS:
        raise ValueError(f"--direction {direction!r}: choose from {DIRECTIONS}")
    splits = parse_splits(splits)
    loaded = {}
    for name in sets:
        family = name.split("/")[0]
        loaded[name] = load_set(instruct_dir, name, splits.get(family), direction,
                                tydiqa_languages if family == "tydiqa" else None, max_per_file)

    from diffusion_plugin.hub_interface import from_pretrained

    hub = from_pretrained(os.path.dirname(os.path.abspath(path)), os.path.basename(path),
                          data_name_or_path=os.path.abspath(data)).eval()
    max_positions = min(hub.task.max_positions(), *(m.max_positions() for m in hub.models))
    length = f"length beam {length_beam}" if length_beam else "oracle length"
    report_rules = dict(vars(rules), direction=direction)
    report_rules["tydiqa_languages"] = list(tydiqa_languages) if tydiqa_languages else "all"
    report = {"checkpoint": os.path.abspath(path), "rules": report_rules, "sets": {}}
    for name, (set_examples, files, absent) in loaded.items():
        family = name.split("/")[0]
        steps = max_iter or SETS[family][1]
        sources, targets, roundtrip = encode(hub, set_examples, max_positions)
        hyps = decode(hub, sources, targets, steps, length_beam, batch_size)
        refs = roundtrip if rules.reference_text == "roundtrip" else [e[1] for e in set_examples]
        prepared = [[rules.prepare(t) for t in side] for side in (hyps, refs)]
        entry = score_instruct_set(family, *prepared, [e[2] for e in set_examples], rules)
        entry.update(examples=len(set_examples), split=splits.get(family), files=files,
                     rule=rules.describe(family), length=length, max_iter=steps,
                     outputs=[{"hyp": h, "ref": r} for h, r in zip(prepared[0][:3], prepared[1][:3])])
        if absent:
            entry["absent_languages"] = absent
        report["sets"][name] = entry
        if progress is not None:
            progress(f"{name}: {entry['metric']} {entry['score']:.2f} on {len(set_examples)} examples "
                     f"of {len(files)} files")
    return report


def format_table(report):
    """The report as a markdown table and a list of the files read and rules used."""
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
