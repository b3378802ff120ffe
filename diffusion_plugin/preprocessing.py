"""Raw parallel text -> fairseq-binarized ``<s> prompt target </s>`` data.

Each source line is wrapped in a prompt template, both sides are encoded with
sentencepiece and the result is binarized with fairseq-preprocess, using one
shared dictionary that always contains ``<mask>``. All inputs are checked
before anything is written, and the output is assembled in a temporary directory
that replaces --destdir at the end. The CLIs are scripts/prepare_prompted.py and
(binarizing pieces) scripts/prepare_instruct.py.
"""

import contextlib
import io
import os
import shutil
import tempfile

from diffusion_plugin.constants import MASK_SYMBOL, PROMPT_TEMPLATE_FILE, SENTENCEPIECE_MODEL

SPLITS = ["train", "valid", "test"]
SPM_SEED = 1
SPM_THREADS = 1


def add_spm_arguments(parser):
    """--spm-model, --dict and the options of training a new sentencepiece model."""
    parser.add_argument(
        "--spm-model",
        help="existing sentencepiece model (e.g. XLM-R's); without --dict the dictionary "
        "holds the pieces of the training data (the paper's pruned vocabulary); if "
        "omitted, a new model is trained on the train data",
    )
    parser.add_argument(
        "--dict",
        help="existing fairseq dictionary matching --spm-model (requires --spm-model), "
        "e.g. XLM-R's dict.txt for its full vocabulary",
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=8000,
        help="sentencepiece vocabulary size when training a model (upper bound)",
    )
    parser.add_argument(
        "--character-coverage",
        type=float,
        default=1.0,
        help="sentencepiece character coverage when training a model",
    )
    parser.add_argument(
        "--spm-model-type",
        choices=["unigram", "bpe"],
        default="unigram",
        help="sentencepiece model type when training a model",
    )
    parser.add_argument(
        "--spm-input-sentence-size",
        type=int,
        default=1000000,
        help="maximum number of (shuffled) sentences used to train sentencepiece",
    )


def _fail(message):
    raise SystemExit("prepare_prompted.py: error: " + message)


def read_lines(path, lowercase=False):
    """Read a corpus file, rejecting missing/empty files and blank lines."""
    if not os.path.isfile(path):
        _fail(
            "input file {} does not exist; check the --*pref and --*-lang "
            "options".format(path)
        )
    lines = []
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    _fail(
                        "{} line {} is empty or whitespace-only; delete line {} "
                        "from both the source and the target file".format(path, i, i)
                    )
                lines.append(line.lower() if lowercase else line)
    except UnicodeDecodeError as e:
        _fail("{} is not valid UTF-8 ({}); re-encode it as UTF-8".format(path, e))
    if not lines:
        _fail("input file {} is empty; give a non-empty corpus".format(path))
    return lines


def check_destdir(args, fail=_fail):
    """--destdir must be absent, empty, or replaced with --force (else ``fail``)."""
    if os.path.exists(args.destdir):
        if not os.path.isdir(args.destdir):
            fail("--destdir {} exists and is not a directory".format(args.destdir))
        if os.listdir(args.destdir) and not args.force:
            fail(
                "--destdir {} is not empty; choose another directory or pass "
                "--force to replace it".format(args.destdir)
            )


def check_args(args):
    """Validate the arguments and read the corpus; writes nothing."""
    if "{src}" not in args.template:
        _fail(
            "--template {!r} does not contain the placeholder {{src}}; add {{src}} "
            "where the source sentence goes".format(args.template)
        )
    if "\n" in args.template or "\r" in args.template:
        _fail("--template must be a single line")
    if args.source_lang == args.target_lang:
        _fail("--source-lang and --target-lang must differ")
    if args.dict is not None and args.spm_model is None:
        _fail("--dict needs the sentencepiece model it belongs to: add --spm-model")
    for flag, path in [("--spm-model", args.spm_model), ("--dict", args.dict)]:
        if path is not None and not os.path.isfile(path):
            _fail(
                "{} {} does not exist; give an existing file (or neither --spm-model "
                "nor --dict, to train a new sentencepiece model)".format(flag, path)
            )
    if args.workers < 1 or args.vocab_size < 1:
        _fail("--workers and --vocab-size must be positive")
    check_destdir(args)

    corpus = {}
    for split, pref in zip(SPLITS, [args.trainpref, args.validpref, args.testpref]):
        if pref is None:
            continue
        paths = [
            "{}.{}".format(pref, lang) for lang in [args.source_lang, args.target_lang]
        ]
        src, tgt = [read_lines(path, args.lowercase) for path in paths]
        if len(src) != len(tgt):
            _fail(
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
        _fail("sentencepiece training failed: {}".format(e))
    with open(model_path, "wb") as f:
        f.write(model.getvalue())
    return model_path


def encode(corpus, args, spm_model, textdir):
    """Write prompted, sentencepiece-encoded text; return the train pieces."""
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_file=spm_model)
    except (OSError, RuntimeError) as e:
        _fail("cannot load sentencepiece model {}: {}".format(spm_model, e))
    train_pieces = []
    for split, (paths, src, tgt) in corpus.items():
        prompted = [args.template.replace("{src}", line) for line in src]
        for path, lang, lines in zip(
            paths, [args.source_lang, args.target_lang], [prompted, tgt]
        ):
            pieces = sp.encode(lines, out_type=str, num_threads=args.workers)
            for i, line_pieces in enumerate(pieces, start=1):
                if not line_pieces:
                    _fail(
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
            _fail("cannot read dictionary {}: {}".format(args.dict, e))
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


def prepare(args):
    """Validate inputs, then write the binarized data to args.destdir.

    Returns a dict with the number of pairs per split and the dictionary size.
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

    summary = {
        "pairs": {split: len(corpus[split][1]) for split in corpus},
        "dict_size": len(dictionary),
        "destdir": destdir,
    }
    for split, n in summary["pairs"].items():
        print("{}: {} pairs".format(split, n))
    print(
        "dictionary: {} symbols (incl. <mask>), written to {}".format(
            summary["dict_size"], destdir
        )
    )
    return summary
