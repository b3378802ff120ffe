"""Raw parallel text -> fairseq-binarized ``<s> prompt target </s>`` data.

Each source line is wrapped in a prompt template, both sides are encoded with
sentencepiece and the result is binarized with fairseq-preprocess, using one
shared dictionary that always contains ``<mask>``. All inputs are checked
before anything is written, and the output is assembled in a temporary directory
that replaces --destdir at the end. The CLIs are scripts/prepare_prompted.py and
(binarizing pieces) scripts/prepare_instruct.py; bad input raises ValueError or
FileNotFoundError naming the file or flag.
"""

import contextlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from diffusion_plugin.constants import MASK_SYMBOL, PROMPT_TEMPLATE_FILE, SENTENCEPIECE_MODEL

SPLITS = ["train", "valid", "test"]
SPM_SEED = 1
SPM_THREADS = 1
DEFAULT_TEMPLATE = "Translate the German sentence to English. German: {src} English:"


@dataclass
class SentencepieceConfig(FairseqDataclass):
    """The sentencepiece model and dictionary (the scripts' options, through fairseq's
    ``gen_parser_from_dataclass``)."""

    spm_model: Optional[str] = field(default=None, metadata={
        "help": "existing sentencepiece model (e.g. XLM-R's); without --dict the dictionary "
        "holds the pieces of the training data (the paper's pruned vocabulary); if "
        "omitted, a new model is trained on the train data"})
    dict: Optional[str] = field(default=None, metadata={
        "help": "existing fairseq dictionary matching --spm-model (requires --spm-model), "
        "e.g. XLM-R's dict.txt for its full vocabulary"})
    vocab_size: int = field(default=8000, metadata={
        "help": "sentencepiece vocabulary size when training a model (upper bound)"})
    character_coverage: float = field(default=1.0, metadata={
        "help": "sentencepiece character coverage when training a model"})
    spm_model_type: ChoiceEnum(["unigram", "bpe"]) = field(default="unigram", metadata={
        "help": "sentencepiece model type when training a model"})
    spm_input_sentence_size: int = field(default=1000000, metadata={
        "help": "maximum number of (shuffled) sentences used to train sentencepiece"})


@dataclass
class PromptedDataConfig(SentencepieceConfig):
    """What :func:`prepare` binarizes (scripts/prepare_prompted.py's options)."""

    trainpref: Optional[str] = field(default=None, metadata={
        "help": "train file prefix; reads {trainpref}.{source,target}-lang"})
    validpref: Optional[str] = field(default=None, metadata={"help": "valid file prefix (optional)"})
    testpref: Optional[str] = field(default=None, metadata={"help": "test file prefix (optional)"})
    destdir: Optional[str] = field(default=None, metadata={"help": "output directory"})
    source_lang: str = field(default="de", metadata={"help": "source language suffix"})
    target_lang: str = field(default="en", metadata={"help": "target language suffix"})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={
        "help": "prompt template; {src} is replaced by the source sentence"})
    force: bool = field(default=False, metadata={"help": "replace --destdir if it exists and is not empty"})
    lowercase: bool = field(default=False, metadata={
        "help": "lowercase the corpus (not the template) before encoding"})
    workers: int = field(default=1, metadata={"help": "number of parallel workers"})


def read_lines(path, lowercase=False):
    """Read a corpus file, rejecting missing/empty files and blank lines."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "input file {} does not exist; check the --*pref and --*-lang "
            "options".format(path)
        )
    lines = []
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    raise ValueError(
                        "{} line {} is empty or whitespace-only; delete line {} "
                        "from both the source and the target file".format(path, i, i)
                    )
                lines.append(line.lower() if lowercase else line)
    except UnicodeDecodeError as e:
        raise ValueError("{} is not valid UTF-8 ({}); re-encode it as UTF-8".format(path, e)) from None
    if not lines:
        raise ValueError("input file {} is empty; give a non-empty corpus".format(path))
    return lines


def check_destdir(destdir, force):
    """--destdir must be absent, empty, or replaced with --force (else ValueError)."""
    if destdir is None:
        raise ValueError("give an output directory (--destdir)")
    if os.path.exists(destdir):
        if not os.path.isdir(destdir):
            raise ValueError("--destdir {} exists and is not a directory".format(destdir))
        if os.listdir(destdir) and not force:
            raise ValueError(
                "--destdir {} is not empty; choose another directory or pass "
                "--force to replace it".format(destdir)
            )


def check_args(args):
    """Validate the arguments and read the corpus; writes nothing."""
    if args.trainpref is None:
        raise ValueError("give the train file prefix (--trainpref)")
    if "{src}" not in args.template:
        raise ValueError(
            "--template {!r} does not contain the placeholder {{src}}; add {{src}} "
            "where the source sentence goes".format(args.template)
        )
    if "\n" in args.template or "\r" in args.template:
        raise ValueError("--template must be a single line")
    if args.source_lang == args.target_lang:
        raise ValueError("--source-lang and --target-lang must differ")
    if args.dict is not None and args.spm_model is None:
        raise ValueError("--dict needs the sentencepiece model it belongs to: add --spm-model")
    for flag, path in [("--spm-model", args.spm_model), ("--dict", args.dict)]:
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(
                "{} {} does not exist; give an existing file (or neither --spm-model "
                "nor --dict, to train a new sentencepiece model)".format(flag, path)
            )
    if args.workers < 1 or args.vocab_size < 1:
        raise ValueError("--workers and --vocab-size must be positive")
    check_destdir(args.destdir, args.force)

    corpus = {}
    for split, pref in zip(SPLITS, [args.trainpref, args.validpref, args.testpref]):
        if pref is None:
            continue
        paths = [
            "{}.{}".format(pref, lang) for lang in [args.source_lang, args.target_lang]
        ]
        src, tgt = [read_lines(path, args.lowercase) for path in paths]
        if len(src) != len(tgt):
            raise ValueError(
                "{} has {} lines but {} has {} lines; both sides of a split must "
                "be line-aligned".format(paths[0], len(src), paths[1], len(tgt))
            )
        corpus[split] = (paths, src, tgt)
    return corpus


def train_spm(sentences, args, model_path):
    """Train a sentencepiece model on ``sentences`` (the spm options of ``args``)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.set_random_generator_seed(SPM_SEED)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=args.vocab_size,
            character_coverage=args.character_coverage,
            model_type=args.spm_model_type,
            hard_vocab_limit=False,
            input_sentence_size=args.spm_input_sentence_size,
            shuffle_input_sentence=True,
            num_threads=SPM_THREADS,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError("sentencepiece training failed: {}".format(e)) from None
    with open(model_path, "wb") as f:
        f.write(model.getvalue())
    return model_path


def encode(corpus, args, spm_model, textdir):
    """Write prompted, sentencepiece-encoded text; return the train pieces."""
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_file=spm_model)
    except (OSError, RuntimeError) as e:
        raise ValueError("cannot load sentencepiece model {}: {}".format(spm_model, e)) from None
    train_pieces = []
    for split, (paths, src, tgt) in corpus.items():
        prompted = [args.template.replace("{src}", line) for line in src]
        for path, lang, lines in zip(
            paths, [args.source_lang, args.target_lang], [prompted, tgt]
        ):
            pieces = sp.encode(lines, out_type=str, num_threads=args.workers)
            for i, line_pieces in enumerate(pieces, start=1):
                if not line_pieces:
                    raise ValueError(
                        "{} line {} encodes to no sentencepiece tokens; delete "
                        "line {} from both the source and the target file".format(
                            path, i, i
                        )
                    )
            out_path = os.path.join(textdir, "{}.{}".format(split, lang))
            with open(out_path, "w", encoding="utf-8") as f:
                f.writelines(" ".join(p) + "\n" for p in pieces)
            if split == "train":
                train_pieces.extend(pieces)
    return train_pieces


def build_dictionary(corpus, args, textdir):
    """Encode the corpus; return the spm model path and a Dictionary with <mask>:
    --dict, or else the pieces of the training data."""
    from fairseq.data import Dictionary

    spm_model = args.spm_model
    if spm_model is None:
        _, src, tgt = corpus["train"]
        template_text = " ".join(args.template.replace("{src}", " ").split())
        # the template occurs once per example in the prompted data
        sentences = src + tgt + [template_text] * len(src)
        spm_model = train_spm(sentences, args, os.path.join(textdir, "spm.model"))
    train_pieces = encode(corpus, args, spm_model, textdir)
    if args.dict is None:
        dictionary = Dictionary()
        for pieces in train_pieces:
            for piece in pieces:
                dictionary.add_symbol(piece)
        dictionary.finalize(padding_factor=1)
    else:
        try:
            dictionary = Dictionary.load(args.dict)
        except (ValueError, RuntimeError) as e:
            raise ValueError("cannot read dictionary {}: {}".format(args.dict, e)) from None
    if MASK_SYMBOL not in dictionary:
        dictionary.add_symbol(MASK_SYMBOL)
    return spm_model, dictionary


def binarize(args, textdir, dict_path, outdir, splits):
    """Run fairseq-preprocess on the encoded text."""
    from fairseq import options
    from fairseq_cli import preprocess

    argv = [
        "--source-lang", args.source_lang,
        "--target-lang", args.target_lang,
        "--destdir", outdir,
        "--srcdict", dict_path,
        "--tgtdict", dict_path,
        "--dataset-impl", "mmap",
        "--workers", str(args.workers),
    ]
    for split in splits:
        argv += ["--{}pref".format(split), os.path.join(textdir, split)]
    pargs = options.get_preprocessing_parser().parse_args(argv)
    try:
        preprocess.main(pargs)
    finally:
        for handler in list(preprocess.logger.handlers):
            if getattr(handler, "baseFilename", "").startswith(outdir):
                preprocess.logger.removeHandler(handler)
                handler.close()


@contextlib.contextmanager
def staging_directory(destdir):
    """Yields (textdir, outdir) in a temporary directory beside ``destdir``; on success
    outdir replaces ``destdir``, and the temporary directory is always removed."""
    parent = os.path.dirname(destdir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix="." + os.path.basename(destdir) + ".", dir=parent)
    try:
        textdir = os.path.join(staging, "text")
        outdir = os.path.join(staging, "out")
        os.makedirs(textdir)
        os.makedirs(outdir)
        yield textdir, outdir
        preprocess_log = os.path.join(outdir, "preprocess.log")
        if os.path.exists(preprocess_log):
            os.remove(preprocess_log)
        if os.path.exists(destdir):
            os.rename(destdir, os.path.join(staging, "old"))
        os.rename(outdir, destdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare(args: PromptedDataConfig):
    """Validate inputs, then write the binarized data to args.destdir.

    Returns a dict with the number of pairs per split, the dictionary size and destdir.
    """
    corpus = check_args(args)

    destdir = os.path.abspath(args.destdir)
    with staging_directory(destdir) as (textdir, outdir):
        spm_model, dictionary = build_dictionary(corpus, args, textdir)
        dict_path = os.path.join(textdir, "dict.txt")
        dictionary.save(dict_path)
        binarize(args, textdir, dict_path, outdir, list(corpus))

        shutil.copyfile(spm_model, os.path.join(outdir, SENTENCEPIECE_MODEL))
        with open(
            os.path.join(outdir, PROMPT_TEMPLATE_FILE), "w", encoding="utf-8"
        ) as f:
            f.write(args.template + "\n")

    return {
        "pairs": {split: len(corpus[split][1]) for split in corpus},
        "dict_size": len(dictionary),
        "destdir": destdir,
    }
