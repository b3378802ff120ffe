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
are scripts/preprocessing.py's.
"""

import argparse
import gzip
import json
import os
import shutil

import numpy as np

from diffusion_plugin import preprocessing
from diffusion_plugin.constants import MASK_SYMBOL, SENTENCEPIECE_MODEL

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


def _fail(message):
    raise SystemExit("prepare_instruct.py: error: " + message)


def read_examples(path):
    from diffusion_plugin.data.instruct_jsonl import read_jsonl

    if not os.path.isfile(path):
        _fail(f"{path} does not exist; give JSON-lines files (.jsonl or .jsonl.gz)")
    try:
        return list(read_jsonl(path))
    except ValueError as e:
        _fail(str(e))


def write_jsonl(path, examples):
    """Write (inputs, targets) pairs as JSON lines (gzipped for .gz), atomically."""
    partial = path + ".partial"
    opener = gzip.open if path.endswith(".gz") else open
    with opener(partial, "wt", encoding="utf-8") as f:
        for inputs, targets in examples:
            f.write(json.dumps({"inputs": inputs, "targets": targets}, ensure_ascii=False) + "\n")
    os.replace(partial, path)


def from_parallel(args):
    """Prompted jsonl from line-aligned parallel text."""
    if "{src}" not in args.template:
        _fail(f"--template {args.template!r} has no {{src}}; put {{src}} where the source goes")
    src, tgt = (preprocessing.read_lines(path) for path in (args.src, args.tgt))
    if len(src) != len(tgt):
        _fail(f"{args.src} has {len(src)} lines but {args.tgt} has {len(tgt)}; align them")
    write_jsonl(args.out, [(args.template.replace("{src}", s), t) for s, t in zip(src, tgt)])
    print(f"{len(src)} examples -> {args.out}")


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
    _fail(f"no file for mixture source {name!r} in {directory} (looked for {name}_train.jsonl.gz, "
          f"{name}.jsonl[.gz]); download it (scripts/download_flan_2022.sh) or drop it from --ratios")


def mix(args):
    """Draw --examples examples: each picks a source by ratio, and each source is read
    in order, from its start again once exhausted (as the paper's FLAN stream)."""
    ratios = FLAN_2022_RATIOS
    if args.ratios:
        try:
            with open(args.ratios, encoding="utf-8") as f:
                ratios = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            _fail(f"--ratios {args.ratios}: {e}; give a JSON object {{source: weight}}")
        if not isinstance(ratios, dict) or not ratios or not all(
            isinstance(w, (int, float)) and w >= 0 for w in ratios.values()
        ) or sum(ratios.values()) <= 0:
            _fail(f"--ratios {args.ratios} must map source names to non-negative weights")
    if args.examples < 1:
        _fail("--examples must be positive")
    names = sorted(ratios)
    weights = np.array([ratios[n] for n in names], dtype=np.float64)
    sources = {}
    for name in names:
        examples = [e for path in find_source(args.dir, name) for e in read_examples(path)]
        if not examples:
            _fail(f"mixture source {name!r} in {args.dir} holds no examples")
        sources[name] = examples
    picks = np.random.RandomState(args.seed).choice(len(names), size=args.examples, p=weights / weights.sum())
    position = dict.fromkeys(names, 0)
    drawn = []
    for pick in picks:
        name = names[pick]
        drawn.append(sources[name][position[name] % len(sources[name])])
        position[name] += 1
    write_jsonl(args.out, drawn)
    print(f"{len(drawn)} examples -> {args.out}: " + ", ".join(f"{n} {position[n]}" for n in names))


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


def binarize(args):
    """Encode, truncate and binarize the jsonl splits into --destdir."""
    import sentencepiece as spm
    from fairseq.data import Dictionary

    if args.dict is not None and args.spm_model is None:
        _fail("--dict needs the sentencepiece model it belongs to: add --spm-model")
    for flag, path in [("--spm-model", args.spm_model), ("--dict", args.dict)]:
        if path is not None and not os.path.isfile(path):
            _fail(f"{flag} {path} does not exist; give an existing file")
    if args.max_positions < 3:
        _fail("--max-positions must be at least 3 (<s>, one target token, </s>)")
    preprocessing.check_destdir(args, fail=_fail)
    splits = {s: [e for path in getattr(args, s) or [] for e in read_examples(path)] for s in SPLITS}
    splits = {s: examples for s, examples in splits.items() if examples or getattr(args, s)}
    for split, examples in splits.items():
        if not examples:
            _fail(f"the --{split} files hold no examples")

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
                _fail(f"every --{split} example has an empty target")
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
    for split, counts in summary["splits"].items():
        print(f"{split}: {counts['examples']} examples; left-truncated {counts['truncated']} "
              f"({counts['tokens_dropped']} tokens dropped); skipped {counts['skipped_empty_target']} "
              "with an empty target")
    print(f"dictionary: {summary['dict_size']} symbols (incl. <mask>), written to {destdir}")
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
    convert.set_defaults(run=from_parallel)

    mixture = commands.add_parser("mix", help="a mixture of jsonl files drawn by ratio")
    mixture.add_argument("--dir", required=True, help="directory of the source files")
    mixture.add_argument("--ratios", help="JSON {source: weight} (default: FLAN 2022's, docs/METHOD.md §7)")
    mixture.add_argument("--examples", type=int, required=True, help="number of examples to draw")
    mixture.add_argument("--seed", type=int, default=1, help="seed of the draw")
    mixture.add_argument("--out", required=True, help="output .jsonl or .jsonl.gz")
    mixture.set_defaults(run=mix)

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
    preprocessing.add_spm_arguments(binarizer)
    binarizer.set_defaults(run=binarize)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    main()
