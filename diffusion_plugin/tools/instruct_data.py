"""Instruction-tuning data (scripts/prepare_instruct.py): JSON lines ``{"inputs": ...,
"targets": ...}`` (plain or .gz) -> mixtures by ratio -> fairseq-binarized
``<s> inputs targets </s>`` pairs for prompted_translation, left-truncated to
--max-positions (docs/METHOD.md §1). The binarizing pieces (sentencepiece training,
fairseq-preprocess, atomic output) are :mod:`diffusion_plugin.tools.preprocessing`'s."""

import gzip
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from diffusion_plugin.constants import MASK_SYMBOL, SENTENCEPIECE_MODEL
from diffusion_plugin.tools import preprocessing
from diffusion_plugin.tools.preprocessing import SentencepieceConfig

# scripts/flan_2022_ratio.json of the paper's code (docs/METHOD.md §7); normalised when sampling
FLAN_2022_RATIOS = {
    "flan_fs_noopt": 0.1, "flan_fs_opt": 0.1, "flan_zs_noopt": 0.1, "flan_zs_opt": 0.1,
    "t0_fs_noopt": 0.106, "t0_zs_noopt": 0.107, "t0_zs_opt": 0.107,
    "niv2_fs_opt": 0.1, "niv2_zs_opt": 0.1,
    "cot_fs_opt": 0.025, "cot_zs_opt": 0.025,
    "dialog_fs_opt": 0.015, "dialog_zs_opt": 0.015,
}
SPLITS = ("train", "valid", "test")
SUMMARY_FILE = "prepare_summary.json"


def read_examples(path):
    from diffusion_plugin.data.instruct_jsonl import read_jsonl

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; give JSON-lines files (.jsonl or .jsonl.gz)")
    return list(read_jsonl(path))


def write_jsonl(path, examples):
    """Write (inputs, targets) pairs as JSON lines (gzipped for .gz), atomically."""
    partial = path + ".partial"
    opener = gzip.open if path.endswith(".gz") else open
    with opener(partial, "wt", encoding="utf-8") as f:
        for inputs, targets in examples:
            f.write(json.dumps({"inputs": inputs, "targets": targets}, ensure_ascii=False) + "\n")
    os.replace(partial, path)


def from_parallel(src_path, tgt_path, template, out):
    """Prompted jsonl ``out`` from line-aligned parallel text; returns the example count."""
    if "{src}" not in template:
        raise ValueError(f"--template {template!r} has no {{src}}; put {{src}} where the source goes")
    src, tgt = (preprocessing.read_lines(path) for path in (src_path, tgt_path))
    if len(src) != len(tgt):
        raise ValueError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; align them")
    write_jsonl(out, [(template.replace("{src}", s), t) for s, t in zip(src, tgt)])
    return len(src)


def find_source(directory, name):
    """The file of mixture source ``name``: {name}_train.jsonl[.gz] or {name}.jsonl[.gz],
    or FLAN's three-part flan_fs_opt_train_part{1,2,3}.jsonl.gz."""
    for stem in (f"{name}_train", name):
        for ext in (".jsonl.gz", ".jsonl"):
            path = os.path.join(directory, stem + ext)
            if os.path.isfile(path):
                return [path]
    parts = [os.path.join(directory, f"{name}_train_part{i}.jsonl.gz") for i in (1, 2, 3)]
    if all(os.path.isfile(p) for p in parts):
        return parts
    raise FileNotFoundError(
        f"no file for mixture source {name!r} in {directory} (looked for {name}_train.jsonl.gz, "
        f"{name}.jsonl[.gz]); download it (scripts/download_flan_2022.sh) or drop it from --ratios")


def mix(directory, examples, out, ratios_path=None, seed=1):
    """Draw ``examples`` examples from the sources in ``directory`` into ``out``: each
    picks a source by ratio (``ratios_path``, a JSON {source: weight}; default FLAN
    2022's), and each source is read in order, from its start again once exhausted (as
    the paper's FLAN stream). Returns {source: examples drawn}."""
    ratios = FLAN_2022_RATIOS
    if ratios_path:
        try:
            with open(ratios_path, encoding="utf-8") as f:
                ratios = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--ratios {ratios_path}: {e}; give a JSON object {{source: weight}}") from None
        if not isinstance(ratios, dict) or not ratios or not all(
            isinstance(w, (int, float)) and w >= 0 for w in ratios.values()
        ) or sum(ratios.values()) <= 0:
            raise ValueError(f"--ratios {ratios_path} must map source names to non-negative weights")
    if examples < 1:
        raise ValueError("--examples must be positive")
    names = sorted(ratios)
    weights = np.array([ratios[n] for n in names], dtype=np.float64)
    sources = {}
    for name in names:
        read = [e for path in find_source(directory, name) for e in read_examples(path)]
        if not read:
            raise ValueError(f"mixture source {name!r} in {directory} holds no examples")
        sources[name] = read
    picks = np.random.RandomState(seed).choice(len(names), size=examples, p=weights / weights.sum())
    position = dict.fromkeys(names, 0)
    drawn = []
    for pick in picks:
        name = names[pick]
        drawn.append(sources[name][position[name] % len(sources[name])])
        position[name] += 1
    write_jsonl(out, drawn)
    return position


def full_dictionary(spm_model):
    """A Dictionary of every piece of ``spm_model`` (less its control symbols) and <mask>."""
    import sentencepiece as spm
    from fairseq.data import Dictionary

    processor = spm.SentencePieceProcessor(model_file=spm_model)
    dictionary = Dictionary()
    for i in range(processor.get_piece_size()):
        if not (processor.is_control(i) or processor.is_unknown(i)):
            dictionary.add_symbol(processor.id_to_piece(i))
    dictionary.finalize(padding_factor=1)
    return dictionary


def encode_split(examples, processor, max_positions, workers):
    """Sentencepiece pieces of each example, left-truncated; skips empty targets.

    Returns (prompt pieces, target pieces, counts).
    """
    from diffusion_plugin.data.instruct_jsonl import left_truncate

    inputs = processor.encode([e[0] for e in examples], out_type=str, num_threads=workers)
    targets = processor.encode([e[1] for e in examples], out_type=str, num_threads=workers)
    prompts, kept_targets = [], []
    counts = {"examples": 0, "skipped_empty_target": 0, "truncated": 0, "tokens_dropped": 0}
    for prompt, target in zip(inputs, targets):
        if not target:
            counts["skipped_empty_target"] += 1
            continue
        prompt, target, dropped = left_truncate(prompt, target, max_positions)
        counts["examples"] += 1
        counts["truncated"] += dropped > 0
        counts["tokens_dropped"] += dropped
        prompts.append(prompt)
        kept_targets.append(target)
    return prompts, kept_targets, counts


@dataclass
class InstructDataConfig(SentencepieceConfig):
    """What :func:`binarize` binarizes (scripts/prepare_instruct.py binarize's options)."""

    train: Optional[List[str]] = field(default=None, metadata={"help": "train jsonl files"})
    valid: Optional[List[str]] = field(default=None, metadata={"help": "valid jsonl files"})
    test: Optional[List[str]] = field(default=None, metadata={"help": "test jsonl files"})
    destdir: Optional[str] = field(default=None, metadata={"help": "output directory"})
    force: bool = field(default=False, metadata={"help": "replace a non-empty --destdir"})
    max_positions: int = field(default=512, metadata={
        "help": "longest <s> inputs targets </s>; longer examples lose their first tokens (docs/METHOD.md §1)"})
    source_lang: str = field(default="src", metadata={"help": "suffix of the inputs side"})
    target_lang: str = field(default="tgt", metadata={"help": "suffix of the targets side"})
    workers: int = field(default=1, metadata={"help": "number of parallel workers"})


def binarize(args: InstructDataConfig):
    """Encode, truncate and binarize the jsonl splits into --destdir; returns the summary
    (also written there as prepare_summary.json)."""
    import sentencepiece as spm
    from fairseq.data import Dictionary

    if not args.train:
        raise ValueError("give the train jsonl files (--train)")
    if args.dict is not None and args.spm_model is None:
        raise ValueError("--dict needs the sentencepiece model it belongs to: add --spm-model")
    for flag, path in [("--spm-model", args.spm_model), ("--dict", args.dict)]:
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"{flag} {path} does not exist; give an existing file")
    if args.max_positions < 3:
        raise ValueError("--max-positions must be at least 3 (<s>, one target token, </s>)")
    preprocessing.check_destdir(args.destdir, args.force)
    splits = {s: [e for path in getattr(args, s) or [] for e in read_examples(path)] for s in SPLITS}
    splits = {s: examples for s, examples in splits.items() if examples or getattr(args, s)}
    for split, examples in splits.items():
        if not examples:
            raise ValueError(f"the --{split} files hold no examples")

    destdir = os.path.abspath(args.destdir)
    summary = {"max_positions": args.max_positions, "splits": {}}
    with preprocessing.staging_directory(destdir) as (textdir, outdir):
        spm_model = args.spm_model
        if spm_model is None:
            sentences = [text for example in splits["train"] for text in example]
            spm_model = preprocessing.train_spm(sentences, args, os.path.join(textdir, "spm.model"))
        processor = spm.SentencePieceProcessor(model_file=spm_model)
        for split, examples in splits.items():
            prompts, targets, counts = encode_split(examples, processor, args.max_positions, args.workers)
            if not prompts:
                raise ValueError(f"every --{split} example has an empty target")
            for lang, pieces in ((args.source_lang, prompts), (args.target_lang, targets)):
                with open(os.path.join(textdir, f"{split}.{lang}"), "w", encoding="utf-8") as f:
                    f.writelines(" ".join(p) + "\n" for p in pieces)
            summary["splits"][split] = counts
        dictionary = Dictionary.load(args.dict) if args.dict else full_dictionary(spm_model)
        if MASK_SYMBOL not in dictionary:
            dictionary.add_symbol(MASK_SYMBOL)
        dict_path = os.path.join(textdir, "dict.txt")
        dictionary.save(dict_path)
        preprocessing.binarize(args, textdir, dict_path, outdir, list(splits))
        shutil.copyfile(spm_model, os.path.join(outdir, SENTENCEPIECE_MODEL))
        summary["dict_size"] = len(dictionary)
        with open(os.path.join(outdir, SUMMARY_FILE), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    return dict(summary, destdir=destdir)
