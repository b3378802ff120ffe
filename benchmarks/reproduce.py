#!/usr/bin/env python3
"""
The paper's claims in miniature on Multi30k de->en (docs/REPRODUCTION.md).

One resumable pipeline, run claim by claim (``--claim a b c d``):

* data: the prompted de->en data (scripts/prepare_prompted.py, a new 8k
  sentencepiece model), the same text unprompted for fairseq's ``transformer``,
  and the masked LM's corpus: Multi30k task 2's monolingual German and English
  (``multi30k/mono``) plus both sides of the parallel train set, one dictionary;
* mlm-SIZE: a masked LM pretrained with fairseq's own ``masked_lm`` task;
* adapt-SIZE-pretrained / adapt-SIZE-scratch: diffusive adaptation from that masked
  LM (``--pretrained-mlm``) and the same architecture from scratch, on the same
  batches for the same updates;
* length-SIZE-INIT: the paper's stage 2, the separate length predictor on the
  frozen denoiser;
* transformer-SIZE: fairseq's autoregressive ``transformer`` of about the same
  parameter count, trained for the adaptation's training time;
* evaluation: fairseq-generate on ``val`` and ``test_2016_flickr``, sacreBLEU with
  its signature, decoding speed at batch size 1 and 64, repetition; and, in a column
  of every table, on each ``--extra-test NAME=PREFIX`` (raw parallel files).

Every training is a fairseq-train run with ``--max-update`` (or, for the
transformer, fairseq's ``--stop-time-hours`` set to the adaptation's CPU time; it
counts the time of earlier runs) that resumes from its ``checkpoint_last.pt``: stopping this script and
running it again continues where it stopped. A stage whose result is recorded in
``WORKDIR/state.json`` is not run again. Each run records its command, its
wall and CPU time and whether other processes shared the machine (the 1-minute
load average, sampled while it ran, above the run's own threads).

``--smoke`` runs every stage at toy sizes on corpus slices (CI); it checks the
table's shape and the provenance of its runs, never its numbers. Its transformer
writes at most 1.2 × source + 10 tokens, and its bs-1 latency runs over a 25th
of test (2 sentences).
"""

import argparse
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (RAW_SPLITS, REPO, SRC, TGT, USER_DIR, Runner, encode_lines, fairseq_cli,
                               find_data, parse_generate, prepare_translation, slice_corpus, table)

TEMPLATE = "Translate the German sentence to English. German: {src} English:"

# layers x dim (heads, FFN = 4 dim); the transformer of each size has about the
# same parameter count with half the layers in its encoder and half in its decoder
SIZES = {
    "micro": {"layers": 3, "dim": 96, "heads": 2},
    "mini": {"layers": 4, "dim": 128, "heads": 2},
    "tiny": {"layers": 6, "dim": 256, "heads": 4},
}
DEFAULT_SIZES = ["tiny", "mini"]
# how an adaptation starts and what it reads: from the masked LM, from random weights,
# or from the masked LM on the transformer's re-decoded train targets (--distill)
INITS = ("pretrained", "scratch", "distilled")
C_SHARDS = 4  # claim (c) decodes a quarter of test2016: 9 decodings of up to 10 lengths each
SMOKE_SIZES = {
    "micro": {"layers": 1, "dim": 32, "heads": 2},
    "mini": {"layers": 2, "dim": 32, "heads": 2},
    "tiny": {"layers": 2, "dim": 64, "heads": 2},
}


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claim", nargs="*", choices=list("abcd"), default=list("abcd"),
                        help="claims to run: a pretrained vs scratch, b bigger is better, "
                        "c predicted vs oracle length, d diffusion vs autoregressive; "
                        "none (a bare --claim) with --train-first only trains those stages")
    parser.add_argument("--data", type=Path, help="Multi30k directory (default: "
                        "../shared/data/multi30k beside the repository)")
    parser.add_argument("--workdir", type=Path, default=REPO / "work" / "reproduce")
    parser.add_argument("--smoke", action="store_true",
                        help="toy sizes on corpus slices: checks the pipeline (CI)")
    parser.add_argument("--threads", type=int, default=1, help="threads of every run")
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, choices=list(SIZES),
                        help="sizes of claim b (the first is the size of claims a, c, d)")
    parser.add_argument("--mlm-updates", type=int, default=2000)
    parser.add_argument("--mlm-max-tokens", type=int, default=4096)
    parser.add_argument("--mlm-lr", type=float, default=1e-3)
    parser.add_argument("--mlm-keep-every", type=int, default=2000,
                        help="keep the masked LM's checkpoint of every N-th update "
                        "(checkpoint_*_N.pt), the points of BLEU against pretraining compute")
    parser.add_argument("--adapt-updates", type=int, default=2000)
    parser.add_argument("--adapt-max-tokens", type=int, default=2048)
    parser.add_argument("--adapt-lr", type=float, default=5e-4)
    parser.add_argument("--adapt-args", default="",
                        help="extra fairseq-train options of every adaptation run, e.g. "
                        "--bf16-autocast on a CPU with native bf16 (AVX512-BF16 or AMX); "
                        "without it bf16 matrix products are many times slower than fp32")
    parser.add_argument("--length-updates", type=int, default=500)
    parser.add_argument("--iter-decode-max-iter", type=int, default=10)
    parser.add_argument("--length-beams", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--speed-sentences", type=int, default=100,
                        help="test sentences decoded for the batch-size-1 latency")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "REPRODUCTION.md",
                        help="where the tables are written (each claim its own section)")
    parser.add_argument("--distill", action="store_true",
                        help="claim d adds a separately labelled track (not the paper's): the "
                        "same masked LM adapted on the train set's targets re-decoded by the "
                        "transformer (sequence-level knowledge distillation, beam 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--extra-test", action="extend", nargs="+", default=[], type=extra_test,
                        metavar="NAME=PREFIX",
                        help="also score every trained model of each claim on the raw parallel "
                        f"files PREFIX.{SRC} and PREFIX.{TGT} (encoded with the run's sentencepiece "
                        "model and dictionaries), a column BLEU NAME in every table; repeatable")
    parser.add_argument("--train-first", nargs="+", default=[], metavar="STAGE", type=stage_name,
                        help="train these stages (mlm-SIZE, adapt-SIZE-INIT, length-SIZE-INIT, "
                        "transformer-SIZE) before the claims: splits the trainings between two "
                        "drivers that share a --workdir, e.g. --train-first adapt-tiny-scratch "
                        "transformer-tiny mlm-mini length-mini-pretrained on the second core")
    return parser


def stage_name(text):
    """A training stage of --train-first: mlm-SIZE, adapt-SIZE-INIT, length-SIZE-INIT or
    transformer-SIZE."""
    sizes, inits = "|".join(SIZES), "|".join(INITS)
    if not re.fullmatch(rf"(mlm|transformer)-({sizes})|(adapt|length)-({sizes})-({inits})", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a training stage; use mlm-SIZE, adapt-SIZE-INIT, length-SIZE-INIT "
            f"or transformer-SIZE with SIZE one of {', '.join(SIZES)} and INIT one of {', '.join(INITS)}"
        )
    return text


def extra_test(text):
    """--extra-test NAME=PREFIX: a NAME and raw parallel files PREFIX.de and PREFIX.en with
    as many lines each; returns ``text``."""
    name, _, prefix = text.partition("=")
    if not re.fullmatch(r"[\w.-]+", name) or not prefix:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give NAME=PREFIX (NAME of letters, digits, '_', '.', '-') for the raw "
            f"parallel files PREFIX.{SRC} and PREFIX.{TGT}"
        )
    lines = {}
    for lang in (SRC, TGT):
        path = Path(f"{prefix}.{lang}")
        if not path.is_file():
            raise argparse.ArgumentTypeError(
                f"{text!r}: {path} is not a file; PREFIX.{SRC} and PREFIX.{TGT} must both exist")
        with open(path, encoding="utf-8") as f:
            lines[lang] = sum(1 for _ in f)
    if lines[SRC] != lines[TGT]:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {prefix}.{SRC} has {lines[SRC]:,} lines and {prefix}.{TGT} {lines[TGT]:,}; "
            "give line-aligned parallel files")
    return text


def extra_tests(args):
    """{NAME: PREFIX} of --extra-test; exits when a NAME is given twice."""
    pairs = [text.split("=", 1) for text in args.extra_test]
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise SystemExit(f"--extra-test: each NAME once, not {', '.join(names)}")
    return {name: Path(prefix).resolve() for name, prefix in pairs}


# ------------------------------------------------------------------ running
class Pipeline(Runner):
    """The work directory of one recipe (its --smoke and --seed), on --threads threads."""

    def __init__(self, args):
        super().__init__(args.workdir, args.threads, {"smoke": args.smoke, "seed": args.seed})
        self.args = args
        self.sizes = SMOKE_SIZES if args.smoke else SIZES


# --------------------------------------------------------------------- data
SMOKE_LINES = {"train": 1000, "val": 50, "test_2016_flickr": 50, "mono/train": 2000}
"""--smoke's corpus slices: lines of both sides of each raw file."""


def prepare_data(pipe, raw):
    """data-bin/de-en (prompted), data-bin/de-en-raw (unprompted), data-bin/mono (MLM)."""
    if not pipe.claim("data"):
        return
    work = pipe.workdir
    for name in ("data-bin", "text"):
        shutil.rmtree(work / name, ignore_errors=True)
    prompted, unprompted, mono = (work / "data-bin" / name for name in ("de-en", "de-en-raw", "mono"))
    text = work / "text"
    runs = prepare_translation(pipe, raw, prompted, text, unprompted, TEMPLATE,
                               500 if pipe.args.smoke else 8000)
    spm_model = prompted / "sentencepiece.bpe.model"
    corpus = [raw / "mono" / f"train.{lang}" for lang in (SRC, TGT)]
    corpus += [raw / f"train.{lang}" for lang in (SRC, TGT)]
    encode_lines(spm_model, corpus, text / "mono.train")
    encode_lines(spm_model, [raw / f"val.{lang}" for lang in (SRC, TGT)], text / "mono.valid")
    runs["preprocess_mono"] = pipe.run("preprocess_mono", [
        fairseq_cli("fairseq-preprocess"), "--only-source",
        "--trainpref", str(text / "mono.train"), "--validpref", str(text / "mono.valid"),
        "--srcdict", str(prompted / f"dict.{SRC}.txt"), "--destdir", str(mono),
    ])
    runs["mlm_corpus"] = {
        "files": [str(path) for path in corpus],
        "lines": sum(1 for path in corpus for _ in open(path, encoding="utf-8")),
        "tokens": sum(len(line.split()) for line in open(text / "mono.train", encoding="utf-8")),
    }
    pipe.record("data", runs)


def adaptation_data(pipe, size_name, init):
    """The binarized prompted data an adaptation of ``init`` reads."""
    name = f"de-en-distilled-{size_name}" if init == "distilled" else "de-en"
    return pipe.workdir / "data-bin" / name


def prepare_extra_test(pipe, name, prefix):
    """--extra-test NAME=PREFIX binarized as the split ``test`` of data-bin/extra-NAME
    (prompted) and data-bin/extra-NAME-raw (unprompted), with the prompted data's
    sentencepiece model and dictionary; a NAME keeps the PREFIX it was first given."""
    key = f"data-extra-{name}"
    if pipe.claim(key):
        prompted, text = pipe.workdir / "data-bin" / "de-en", pipe.workdir / "text" / f"extra-{name}"
        spm_model = prompted / "sentencepiece.bpe.model"
        run = pipe.run(key, [
            sys.executable, str(REPO / "scripts" / "prepare_prompted.py"),
            "--source-lang", SRC, "--target-lang", TGT, "--trainpref", str(prefix),
            "--testpref", str(prefix), "--template", TEMPLATE, "--spm-model", str(spm_model),
            "--dict", str(prompted / f"dict.{TGT}.txt"), "--force",
            "--destdir", str(pipe.workdir / "data-bin" / f"extra-{name}"),
        ])
        text.mkdir(parents=True, exist_ok=True)
        for lang in (SRC, TGT):
            encode_lines(spm_model, [Path(f"{prefix}.{lang}")], text / f"test.{lang}")
        unprompted = pipe.run(f"{key}-raw", [
            fairseq_cli("fairseq-preprocess"), "--source-lang", SRC, "--target-lang", TGT,
            "--testpref", str(text / "test"), "--srcdict", str(prompted / f"dict.{SRC}.txt"),
            "--tgtdict", str(prompted / f"dict.{TGT}.txt"),
            "--destdir", str(pipe.workdir / "data-bin" / f"extra-{name}-raw"),
        ])
        pipe.record(key, {"prefix": str(prefix), "prepare": run, "preprocess_raw": unprompted})
    prepared = pipe.state["stages"][key]["prefix"]
    if prepared != str(prefix):
        raise SystemExit(f"--extra-test {name}={prefix}: {pipe.workdir} holds {name} from "
                         f"{prepared}; give this test set another NAME")


def distill(pipe, raw, size_name, transformer_checkpoint):
    """Sequence-level knowledge distillation data (--distill): the train set's targets
    replaced by the transformer's beam-5 translations of its sources, binarized with the
    prompted data's sentencepiece model and dictionary (val and test unchanged)."""
    key = f"distill-{size_name}"
    if pipe.claim(key):
        decoded = generate(pipe, f"transformer-{size_name}", transformer_checkpoint, "train", "ar")
        sources = references_side(raw, "train", SRC)
        targets = [decoded["hypotheses"].get(str(i), "") for i in range(len(sources))]
        empty = [i for i, text in enumerate(targets) if not text.strip()]
        originals = references(raw, "train")
        for i in empty:  # an empty translation would be an empty target: keep the reference
            targets[i] = originals[i]
        text = pipe.workdir / "text" / key
        shutil.rmtree(text, ignore_errors=True)
        text.mkdir(parents=True)
        (text / f"train.{SRC}").write_text("".join(f"{line}\n" for line in sources), encoding="utf-8")
        (text / f"train.{TGT}").write_text("".join(f"{line}\n" for line in targets), encoding="utf-8")
        for split in ("valid", "test"):
            for lang in (SRC, TGT):
                shutil.copy(raw / f"{RAW_SPLITS[split]}.{lang}", text / f"{split}.{lang}")
        prompted = pipe.workdir / "data-bin" / "de-en"
        run = pipe.run(key, [
            sys.executable, str(REPO / "scripts" / "prepare_prompted.py"),
            "--source-lang", SRC, "--target-lang", TGT, "--trainpref", str(text / "train"),
            "--validpref", str(text / "valid"), "--testpref", str(text / "test"),
            "--template", TEMPLATE, "--spm-model", str(prompted / "sentencepiece.bpe.model"),
            "--dict", str(prompted / f"dict.{TGT}.txt"), "--force",
            "--destdir", str(adaptation_data(pipe, size_name, "distilled")),
        ])
        run.update({
            "decoding": {name: decoded[name] for name in ("command", "cpu_s", "shared")},
            "pairs": len(sources),
            "kept_reference": len(empty),
            "changed": sum(a != b for a, b in zip(targets, originals)),
        })
        pipe.record(key, run)
    return pipe.state["stages"][key]


# ----------------------------------------------------------------- training
def shape_args(size):
    return [
        "--encoder-layers", str(size["layers"]), "--encoder-embed-dim", str(size["dim"]),
        "--encoder-ffn-embed-dim", str(4 * size["dim"]),
        "--encoder-attention-heads", str(size["heads"]),
    ]


def optimizer_args(lr, updates, seed):
    """Adam with a linear warm-up over 10% of the updates, then linear decay to 0."""
    return [
        "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6",
        "--clip-norm", "1.0", "--weight-decay", "0.01",
        "--lr", str(lr), "--lr-scheduler", "polynomial_decay",
        "--warmup-updates", str(max(1, updates // 10)), "--total-num-update", str(updates),
        "--max-update", str(updates), "--seed", str(seed),
        "--cpu", "--num-workers", "0", "--log-format", "simple", "--log-interval", "50",
        "--no-epoch-checkpoints",
    ]


def train_mlm(pipe, size_name):
    """fairseq's masked_lm (RoBERTa) on the monolingual corpus; returns its checkpoint."""
    key = f"mlm-{size_name}"
    save_dir = pipe.workdir / "checkpoints" / key
    if pipe.claim(key):
        args, updates = pipe.args, (30 if pipe.args.smoke else pipe.args.mlm_updates)
        cmd = [
            fairseq_cli("fairseq-train"), str(pipe.workdir / "data-bin" / "mono"),
            "--user-dir", str(USER_DIR),  # only for loading checkpoints under torch >= 2.6
            "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta",
            *shape_args(pipe.sizes[size_name]), "--max-positions", "256",
            "--tokens-per-sample", "128", "--sample-break-mode", "complete",
            "--dropout", "0.1", "--attention-dropout", "0.1",
            *optimizer_args(args.mlm_lr, updates, args.seed),
            "--max-tokens", str(args.mlm_max_tokens),
            "--save-interval-updates", "250", "--keep-interval-updates", "1",
            "--keep-interval-updates-pattern", str(args.mlm_keep_every),
            "--validate-interval-updates", "1000", "--skip-invalid-size-inputs-valid-test",
            "--save-dir", str(save_dir),
        ]
        run = pipe.run(key, cmd)
        run.update(last_validation(pipe.workdir / "logs" / f"{key}.log"))
        pipe.record(key, run)
    return save_dir / "checkpoint_last.pt"


VALID_RE = re.compile(r"valid on 'valid' subset \| (.*)")
VALID_LOSS_RE = re.compile(r"valid on 'valid' subset \| loss ([\d.]+) \|.*?num_updates (\d+)")


def last_validation(log_path):
    """The last ``valid on 'valid'`` line of a fairseq-train log as a dict of floats."""
    found = VALID_RE.findall(log_path.read_text(errors="replace"))
    if not found:
        return {}
    values = {}
    for item in found[-1].split(" | "):
        name, _, value = item.partition(" ")
        try:
            values[f"valid_{name}"] = float(value.replace(",", ""))
        except ValueError:
            pass
    return values


def adapt(pipe, size_name, init, mlm_checkpoint=None):
    """Diffusive adaptation on de->en (stage 1, no joint length loss); its save dir.

    ``pretrained`` starts from the masked LM, ``scratch`` from random weights with
    label smoothing 0.1 (the paper's setting for models without pretraining, §A.1);
    both see the same batches in the same order. ``distilled`` starts from the masked
    LM and reads the distilled data (:func:`distill`).
    """
    key = f"adapt-{size_name}-{init}"
    save_dir = pipe.workdir / "checkpoints" / key
    if pipe.claim(key):
        args = pipe.args
        updates = 40 if args.smoke else args.adapt_updates
        interval = max(10, updates // 6)
        cmd = [
            fairseq_cli("fairseq-train"), str(adaptation_data(pipe, size_name, init)),
            "--user-dir", str(USER_DIR), "--task", "prompted_translation", "-s", SRC, "-t", TGT,
            "--arch", "diffusion_xlmr_tiny", *shape_args(pipe.sizes[size_name]),
            "--max-positions", "256", "--criterion", "masked_diffusion",
            "--length-loss-factor", "0", "--dropout", "0.1",
            *optimizer_args(args.adapt_lr, updates, args.seed),
            "--max-tokens", str(args.adapt_max_tokens), "--required-batch-size-multiple", "1",
            "--save-interval-updates", str(interval), "--keep-interval-updates", "-1",
            "--validate-interval-updates", str(interval), "--fixed-validation-seed", "7",
            "--save-dir", str(save_dir), *shlex.split(args.adapt_args),
        ]
        if init != "scratch":
            cmd += ["--pretrained-mlm", str(mlm_checkpoint), "--pretrained-vocab", "full"]
        else:
            cmd += ["--label-smoothing", "0.1"]
        pipe.record(key, pipe.run(key, cmd))
    return save_dir


def train_length(pipe, size_name, init):
    """The paper's stage 2: the separate length predictor on the frozen denoiser."""
    key = f"length-{size_name}-{init}"
    save_dir = pipe.workdir / "checkpoints" / key
    if pipe.claim(key):
        args = pipe.args
        updates = 20 if args.smoke else args.length_updates
        cmd = [
            fairseq_cli("fairseq-train"), str(adaptation_data(pipe, size_name, init)),
            "--user-dir", str(USER_DIR), "--task", "prompted_translation", "-s", SRC, "-t", TGT,
            "--arch", "diffusion_xlmr_tiny", *shape_args(pipe.sizes[size_name]),
            "--max-positions", "256", "--length-predictor", "separate",
            "--criterion", "length_prediction",
            "--finetune-from-model",
            str(pipe.workdir / "checkpoints" / f"adapt-{size_name}-{init}" / "checkpoint_last.pt"),
            *optimizer_args(1e-3, updates, args.seed),
            "--max-tokens", str(args.adapt_max_tokens), "--required-batch-size-multiple", "1",
            "--save-interval-updates", str(max(10, updates // 4)), "--keep-interval-updates", "1",
            "--disable-validation", "--save-dir", str(save_dir), *shlex.split(args.adapt_args),
        ]
        pipe.record(key, pipe.run(key, cmd))
    return save_dir / "checkpoint_last.pt"


def train_transformer(pipe, size_name, seconds):
    """fairseq's transformer (half the layers each side) for ``seconds`` of training."""
    key = f"transformer-{size_name}"
    save_dir = pipe.workdir / "checkpoints" / key
    if pipe.claim(key):
        size, args = pipe.sizes[size_name], pipe.args
        half = max(1, size["layers"] // 2)
        cmd = [
            fairseq_cli("fairseq-train"), str(pipe.workdir / "data-bin" / "de-en-raw"),
            "--user-dir", str(USER_DIR),  # only for loading checkpoints under torch >= 2.6
            "--task", "translation", "-s", SRC, "-t", TGT, "--arch", "transformer",
            "--encoder-layers", str(half), "--decoder-layers", str(half),
            "--encoder-embed-dim", str(size["dim"]), "--decoder-embed-dim", str(size["dim"]),
            "--encoder-ffn-embed-dim", str(4 * size["dim"]),
            "--decoder-ffn-embed-dim", str(4 * size["dim"]),
            "--encoder-attention-heads", str(size["heads"]),
            "--decoder-attention-heads", str(size["heads"]),
            "--share-all-embeddings", "--dropout", "0.1",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--clip-norm", "1.0",
            "--weight-decay", "0.01", "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt",
            "--warmup-updates", "40" if args.smoke else "1000", "--warmup-init-lr", "1e-07",
            "--max-tokens", "4096", "--stop-time-hours", f"{seconds / 3600:.6f}",
            "--seed", str(args.seed), "--cpu", "--num-workers", "0",
            "--log-format", "simple", "--log-interval", "50", "--no-epoch-checkpoints",
            "--save-interval-updates", "10" if args.smoke else "250",
            "--keep-interval-updates", "-1", "--validate-interval-updates",
            "10" if args.smoke else "250", "--save-dir", str(save_dir),
        ]
        pipe.record(key, pipe.run(key, cmd))
    return save_dir


def checkpoint_facts(checkpoint):
    """Parameters (unique, length predictor excluded) and updates of a checkpoint."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    tensors = {
        name: value for name, value in state["model"].items()
        if not name.startswith("length_predictor.") and not name.startswith("length_head.")
    }
    unique = {}
    for name, value in tensors.items():
        unique.setdefault((value.data_ptr(), tuple(value.shape)), value.numel())
    return {
        "parameters": sum(unique.values()),
        "updates": state["optimizer_history"][-1]["num_updates"],
    }


# --------------------------------------------------------------- evaluation
def generate(pipe, key, checkpoint, split, kind, extra=(), batch_size=64, shards=None):
    """fairseq-generate on ``split``; returns hypotheses by id, sentences/s and steps.

    ``kind`` is ``diffusion`` (the plugin) or ``ar`` (beam 5). ``shards`` (N, i) decodes
    fairseq-generate's shard i of N (``--num-shards``), a fixed subset. ``split``
    ``extra-NAME`` is --extra-test NAME (:func:`prepare_extra_test`).
    """
    name = f"generate-{key}-{split}" + (f"-shard{shards[1]}of{shards[0]}" if shards else "")
    name += f"-bs{batch_size}" if batch_size != 64 else ""
    if pipe.claim(name):
        args, subset = pipe.args, split
        data = pipe.workdir / "data-bin" / ("de-en" if kind == "diffusion" else "de-en-raw")
        if split.startswith("extra-"):
            data, subset = pipe.workdir / "data-bin" / (split + ("" if kind == "diffusion" else "-raw")), "test"
        if kind == "diffusion":
            cmd = [
                fairseq_cli("fairseq-generate"), str(data), "--user-dir", str(USER_DIR),
                "--task", "prompted_translation",
                "--iter-decode-max-iter", str(3 if args.smoke else args.iter_decode_max_iter),
                "--print-step",
            ]
        else:
            cmd = [fairseq_cli("fairseq-generate"), str(data), "--user-dir", str(USER_DIR),
                   "--task", "translation", "--beam", "5"]
            # --smoke: an untrained transformer writes fairseq's 200-token maximum
            cmd += ["--max-len-a", "1.2", "--max-len-b", "10"] if args.smoke else []
        cmd += [
            "-s", SRC, "-t", TGT, "--path", str(checkpoint), "--gen-subset", subset,
            "--batch-size", str(batch_size), "--required-batch-size-multiple", "1",
            "--post-process", "sentencepiece", "--cpu", "--num-workers", "0", *extra,
        ]
        if shards:
            cmd += ["--num-shards", str(shards[0]), "--shard-id", str(shards[1])]
        run = pipe.run(name, cmd)
        run.update(parse_generate((pipe.workdir / "logs" / f"{name}.log").read_text(
            encoding="utf-8", errors="replace")))
        pipe.record(name, run)
    return pipe.state["stages"][name]


def references_side(raw, split, lang):
    """The raw lines of one side of a split."""
    with open(raw / f"{RAW_SPLITS[split]}.{lang}", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def references(raw, split):
    return references_side(raw, split, TGT)


def bleu(decoded, refs):
    """sacreBLEU (13a, mixed case) of the decoded ids against the raw references."""
    import sacrebleu

    ids = sorted(decoded["hypotheses"], key=int)
    metric = sacrebleu.BLEU()
    score = metric.corpus_score([decoded["hypotheses"][i] for i in ids], [[refs[int(i)] for i in ids]])
    return round(score.score, 2), str(metric.get_signature())


def repetition(decoded):
    """Share of adjacent repeated words (w_i == w_{i-1}) over all adjacent pairs."""
    pairs = repeats = 0
    for text in decoded["hypotheses"].values():
        words = text.split()
        pairs += max(len(words) - 1, 0)
        repeats += sum(a == b for a, b in zip(words, words[1:]))
    return round(100.0 * repeats / max(pairs, 1), 2)


# ------------------------------------------------------------------- claims
def diffusion_options(beam=3, oracle=False, selection="score", collapse=False):
    """(key suffix, fairseq-generate options) of one decoding setting."""
    options = ["--iter-decode-with-beam", str(beam), "--nbest", str(beam),
               "--candidate-selection", selection]
    suffix = f"lb{beam}" + ("-oracle" if oracle else "") + ("" if selection == "score" else f"-{selection}")
    options += ["--oracle-length"] if oracle else []
    options += ["--collapse-repeats"] if collapse else []
    return suffix + ("-collapse" if collapse else ""), options


class Claims:
    """Runs what each claim needs (skipping what is done) and returns its table."""

    def __init__(self, pipe, raw, extras):
        self.pipe, self.raw, self.args = pipe, raw, pipe.args
        self.refs = {split: references(raw, split) for split in ("valid", "test")}
        for name, prefix in extras.items():  # --extra-test
            self.refs[f"extra-{name}"] = Path(f"{prefix}.{TGT}").read_text(encoding="utf-8").splitlines()
        self.extras = [f"extra-{name}" for name in extras]
        self.extra_header = [f"BLEU {name}" for name in extras]
        self.size = self.args.sizes[0]

    def mlm(self, size):
        return train_mlm(self.pipe, size)

    def adapted(self, size, init):
        """Stage 1 of size/init, with what it needs first (masked LM, distilled data)."""
        if init == "distilled":
            distill(self.pipe, self.raw, size, self.transformer(size))
        adapt(self.pipe, size, init, None if init == "scratch" else self.mlm(size))

    def denoiser(self, size, init):
        """The stage-2 checkpoint (denoiser + separate length predictor) of size/init."""
        self.adapted(size, init)
        return train_length(self.pipe, size, init)

    def decode(self, size, init, split, shards=None, **setting):
        suffix, options = diffusion_options(**setting)
        decoded = generate(self.pipe, f"{size}-{init}-{suffix}", self.denoiser(size, init), split,
                           "diffusion", options, shards=shards)
        return decoded, bleu(decoded, self.refs[split])

    def extra_scores(self, size, init, **setting):
        """BLEU of one diffusion model and decoding setting on every --extra-test, as cells."""
        return [f"{self.decode(size, init, split, **setting)[1][0]:.2f}" for split in self.extras]

    def shared(self, *keys):
        stages = self.pipe.state["stages"]
        names = [key for key in keys if stages.get(key, {}).get("shared")]
        return "shared (" + ", ".join(names) + ")" if names else "alone"

    def facts(self, key):
        return checkpoint_facts(self.pipe.workdir / "checkpoints" / key / "checkpoint_last.pt")

    def a(self):
        rows, test = [], {}
        for init in ("pretrained", "scratch"):
            (_, (valid, _)), (decoded, (test[init], signature)) = (
                self.decode(self.size, init, split) for split in ("valid", "test")
            )
            facts = self.facts(f"adapt-{self.size}-{init}")
            rows.append([
                "masked LM, then adapted" if init == "pretrained" else "from scratch",
                f"{facts['parameters'] / 1e6:.2f}M", f"{facts['updates']:,}",
                f"{valid:.2f}", f"{test[init]:.2f}", *self.extra_scores(self.size, init),
                f"{repetition(decoded):.2f}%",
                self.shared(f"adapt-{self.size}-{init}", f"length-{self.size}-{init}"),
            ])
        return table(
            ["init", "parameters", "adaptation updates", "BLEU val", "BLEU test2016",
             *self.extra_header, "repeated adjacent words", "runs"], rows,
            [f"Pretrained + adapted / from scratch on test2016: "
             f"{bold_ratio(test['pretrained'], test['scratch'], 'from scratch')}. "
             f"sacreBLEU `{signature}`."],
        )

    def b(self):
        rows = []
        for size in self.args.sizes:
            (_, (valid, _)), (_, (test, signature)) = (
                self.decode(size, "pretrained", split) for split in ("valid", "test")
            )
            mlm_run = self.pipe.state["stages"][f"mlm-{size}"]
            facts, shape = self.facts(f"adapt-{size}-pretrained"), self.pipe.sizes[size]
            rows.append([
                f"{size} ({shape['layers']} × {shape['dim']})", f"{facts['parameters'] / 1e6:.2f}M",
                f"{mlm_run.get('valid_ppl', float('nan')):.1f}", f"{facts['updates']:,}",
                f"{valid:.2f}", f"{test:.2f}", *self.extra_scores(size, "pretrained"),
                self.shared(f"mlm-{size}", f"adapt-{size}-pretrained", f"length-{size}-pretrained"),
            ])
        rows.sort(key=lambda row: float(row[1][:-1]))
        return table(
            ["size", "parameters", "MLM valid ppl", "adaptation updates", "BLEU val",
             "BLEU test2016", *self.extra_header, "runs"], rows,
            [f"For scale: the unigram model of the masked LM's train corpus has perplexity "
             f"{unigram_perplexity(self.pipe.workdir / 'text'):.1f} on its valid text (every "
             f"piece scored; fairseq's masked LM scores only the masked 15 %). "
             f"sacreBLEU `{signature}`."],
        )

    def c(self):
        rows, why_rows, beams = [], [], self.args.length_beams
        shards = (1, 0) if self.args.smoke else (C_SHARDS, 0)  # the first of C_SHARDS parts of test
        for size in self.args.sizes:
            oracle_decoded, (oracle, _) = self.decode(size, "pretrained", "test", shards, beam=1,
                                                      oracle=True)
            reference_pieces = {i: found[0][1] for i, found in oracle_decoded["candidates"].items()}
            for selection in ("score", "joint"):
                cells, biases, widest = [], [], None
                for beam in beams:
                    # one candidate: every selection keeps it
                    decoded, (score, _) = self.decode(size, "pretrained", "test", shards, beam=beam,
                                                      selection=selection if beam > 1 else "score")
                    cells.append(score)
                    biases.append(length_bias(decoded, reference_pieces))
                    widest = decoded
                rows.append([size, selection, *[f"{c:.2f}" for c in cells], f"{oracle:.2f}",
                             f"{oracle - cells[-1]:+.2f}", *self.extra_scores(
                                 size, "pretrained", beam=beams[-1],
                                 selection=selection if beams[-1] > 1 else "score")])
                # the widest beam: is the reference length among its candidates, and what
                # would picking the candidate nearest to it score?
                nearest, covered = nearest_length_candidates(widest, reference_pieces)
                why_rows.append([size, selection, *[f"{b:+.2f}" for b in biases],
                                 f"{covered:.1f}%", f"{bleu(nearest, self.refs['test'])[0]:.2f}"])
        header = ["size", "candidate selection", *[f"LB {b}" for b in beams],
                  "oracle length", "oracle − last LB",
                  *[f"{name} (LB {beams[-1]})" for name in self.extra_header]]
        part = "all of test2016" if self.args.smoke else f"the first of {C_SHARDS} shards of test2016 (fairseq-generate --num-shards {C_SHARDS} --shard-id 0, {len(oracle_decoded['hypotheses'])} sentences)"
        why = table(
            ["size", "candidate selection", *[f"length error LB {b}" for b in beams],
             f"reference length among LB {beams[-1]}'s candidates",
             f"LB {beams[-1]}, the candidate nearest the reference length"], why_rows,
            ["Length error: the mean of (chosen length − reference length) in sentencepiece "
             "pieces (the reference length is the oracle decode's); negative means the chosen "
             "candidates are too short. The last column picks, among the same decoded "
             "candidates, the one whose length is nearest the reference: what a perfect "
             "selection among them would score."],
        )
        return table(header, rows, [
            f"BLEU on {part} with the separate (stage-2) length predictor; LB k decodes "
            "the predictor's k most likely lengths and keeps the candidate chosen by the "
            "selection rule (`score`: mean token log-prob, the paper's; `joint`: "
            "(Σ log p_i + log P(L)) / (L + 1) with P(L) from the predictor, "
            "`--candidate-selection joint`)."
        ]) + "\n\n### Why more length candidates can hurt\n\n" + why

    def transformer(self, size):
        """fairseq's transformer trained for the adaptation's CPU time: that of the
        from-scratch adaptation, the same network on the same batches for the same
        updates as the pretrained one (so both drivers can start at once; the table
        prints the pretrained run's time beside it), summed over its invocations."""
        adapt(self.pipe, size, "scratch")
        adaptation = self.pipe.state["stages"][f"adapt-{size}-scratch"]
        seconds = adaptation.get("cpu_total_s", adaptation["cpu_s"])
        return train_transformer(self.pipe, size, seconds) / "checkpoint_last.pt"

    def train(self, stage):
        """Train one stage (:func:`stage_name`) and what it needs (``--train-first``)."""
        kind, size, init = (stage.split("-") + [None])[:3]
        if kind == "mlm":
            self.mlm(size)
        elif kind == "adapt":
            self.adapted(size, init)
        elif kind == "length":
            self.denoiser(size, init)
        else:
            self.transformer(size)

    def d(self):
        args, size = self.args, self.size
        key = f"adapt-{size}-pretrained"
        transformer = self.transformer(size)
        suffix, options = diffusion_options()
        collapsed_suffix, collapsed_options = diffusion_options(collapse=True)
        denoiser = self.denoiser(size, "pretrained")
        systems = {
            "diffusion (masked LM, then adapted)": (f"{size}-pretrained-{suffix}", denoiser,
                                                    "diffusion", options, key),
            "the same, `--collapse-repeats`": (f"{size}-pretrained-{collapsed_suffix}", denoiser,
                                               "diffusion", collapsed_options, key),
        }
        if args.distill:
            systems["distilled track (not the paper's): the same masked LM adapted on the transformer's translations"] = (
                f"{size}-distilled-{suffix}", self.denoiser(size, "distilled"), "diffusion", options,
                f"adapt-{size}-distilled")
        systems["fairseq transformer, beam 5"] = (f"transformer-{size}", transformer, "ar", [],
                                                  f"transformer-{size}")
        rows, scores = [], {}
        for label, (name, checkpoint, kind, options, train_key) in systems.items():
            collapsed = "--collapse-repeats" in options  # test only: the same canvases as the row above
            valid = None if collapsed else bleu(
                generate(self.pipe, name, checkpoint, "valid", kind, options), self.refs["valid"])[0]
            decoded = generate(self.pipe, name, checkpoint, "test", kind, options)
            test, signature = bleu(decoded, self.refs["test"])
            shards = 25 if args.smoke else max(1, 1000 // args.speed_sentences)
            speed_options = options if "--collapse-repeats" not in options else options[:-1]
            single = generate(self.pipe, name.replace("-collapse", ""), checkpoint, "test", kind,
                              speed_options, batch_size=1, shards=(shards, 0))
            extra = [f"{bleu(generate(self.pipe, name, checkpoint, split, kind, options), self.refs[split])[0]:.2f}"
                     for split in self.extras]
            facts = self.facts(train_key)
            steps = decoded["mean_steps"]
            rows.append([
                label, f"{facts['parameters'] / 1e6:.2f}M",
                f"{cpu_minutes(self.pipe.state['stages'][train_key]):.1f}",
                f"{facts['updates']:,}", "—" if valid is None else f"{valid:.2f}", f"{test:.2f}", *extra,
                f"{single['sentences_per_second']:.2f}", f"{decoded['sentences_per_second']:.2f}",
                f"{steps:.1f}" if steps else "one per token", f"{repetition(decoded):.2f}%",
                self.shared(train_key),
            ])
            scores[label] = test
        ar_score = scores["fairseq transformer, beam 5"]
        ratios = {label: bold_ratio(score, ar_score, "the transformer") for label, score in scores.items()}
        labels = list(systems)
        distilled = ""
        if args.distill:
            stage = self.pipe.state["stages"][f"distill-{size}"]
            distilled = (
                f" Distilled track / autoregressive: {ratios[labels[2]]} at the same "
                f"adaptation updates; its teacher is the transformer of the last row, whose "
                f"beam-5 translations of the {stage['pairs']:,} train sources "
                f"({stage['decoding']['cpu_s'] / 60:.1f} CPU min to decode; "
                f"{stage['changed']:,} differ from the reference, {stage['kept_reference']} "
                f"empty ones kept the reference) replace the train targets."
            )
        curves, examples = self.curves(), self.examples()
        return table(
            ["system", "parameters", "training CPU min", "updates", "BLEU val", "BLEU test2016",
             *self.extra_header, "sent/s bs 1", "sent/s bs 64", "decoding steps", "repeated adjacent words", "runs"],
            rows,
            [f"Diffusion / autoregressive BLEU on test2016 at equal training time: "
             f"{ratios[labels[0]]}.{distilled} The transformer's budget was the CPU time of "
             f"`adapt-{size}-scratch`, {cpu_minutes(self.pipe.state['stages'][f'adapt-{size}-scratch']):.1f} min "
             f"(the same network, batches and updates as the pretrained adaptation). The "
             f"`--collapse-repeats` row decodes the same canvases (its bs 1 speed is the row "
             f"above's). sacreBLEU `{signature}`."],
        ) + "\n\n### Training curves\n\n" + curves + "\n\n### Examples (test2016)\n\n" + examples


    def curves(self):
        """Valid loss and BLEU against updates of every trained run, as docs/img/reproduction_curves.png.

        BLEU comes from each interval checkpoint decoded on a fixed fifth of val
        (fairseq-generate --num-shards 5 --shard-id 0): the diffusion checkpoints of stage 1
        have no trained length predictor yet, so they decode at the oracle length.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        runs = [key for key in (f"adapt-{self.size}-pretrained", f"adapt-{self.size}-scratch",
                                f"transformer-{self.size}") if self.pipe.done(key)]
        figure, (loss_axes, bleu_axes) = plt.subplots(1, 2, figsize=(10, 3.8))
        points = {}
        for key in runs:
            log_path = self.pipe.workdir / "logs" / f"{key}.log"
            losses = VALID_LOSS_RE.findall(log_path.read_text(errors="replace"))
            loss_by_update = {int(u): float(loss) for loss, u in losses}
            loss_axes.plot(sorted(loss_by_update), [loss_by_update[u] for u in sorted(loss_by_update)],
                           marker="o", label=key)
            kind = "ar" if key.startswith("transformer") else "diffusion"
            options = [] if kind == "ar" else ["--oracle-length", "--iter-decode-with-beam", "1"]
            scores = {}
            for updates, checkpoint in curve_checkpoints(self.pipe.workdir / "checkpoints" / key,
                                                         2 if self.args.smoke else 5):
                decoded = generate(self.pipe, f"curve-{key}-{updates}", checkpoint, "valid", kind,
                                   options, shards=(5, 0))
                scores[updates] = bleu(decoded, self.refs["valid"])[0]
            bleu_axes.plot(sorted(scores), [scores[u] for u in sorted(scores)], marker="o", label=key)
            points[key] = scores
        loss_axes.set(xlabel="updates", ylabel="valid loss (base 2; each model its own loss)",
                      title="validation loss")
        bleu_axes.set(xlabel="updates", ylabel="BLEU, 1/5 of val",
                      title="BLEU (diffusion: oracle length)")
        for axes in (loss_axes, bleu_axes):
            axes.grid(alpha=0.3)
            axes.legend(fontsize=7)
        figure.tight_layout()
        image = (self.args.doc.parent / "img" if not self.args.smoke else self.pipe.workdir) / "reproduction_curves.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(image, dpi=110)
        rows = [[key, *[f"{u}: {b:.2f}" for u, b in sorted(scores.items())]] for key, scores in points.items()]
        width = max(len(row) for row in rows) if rows else 1
        rows = [row + [""] * (width - len(row)) for row in rows]
        return (table(["run", *[f"point {i}" for i in range(1, width)]], rows)
                + f"\n\n![training curves](img/{image.name})")

    def examples(self, count=4):
        """The first ``count`` test sentences with the reference and both systems' output."""
        suffix, _ = diffusion_options()
        stages = self.pipe.state["stages"]
        diffusion = stages.get(f"generate-{self.size}-pretrained-{suffix}-test", {}).get("hypotheses", {})
        ar = stages.get(f"generate-transformer-{self.size}-test", {}).get("hypotheses", {})
        sources = references_side(self.raw, "test", SRC)
        rows = [[sources[i], self.refs["test"][i], diffusion.get(str(i), ""), ar.get(str(i), "")]
                for i in range(min(count, len(sources)))]
        return table(["source", "reference", "diffusion", "transformer"],
                     [[shorten(cell) for cell in row] for row in rows])


def unigram_perplexity(text):
    """Perplexity on TEXT/mono.valid of the unigram model of TEXT/mono.train (each line
    ends with ``</s>``; an unseen piece counts half an occurrence)."""
    import collections
    import math

    counts = collections.Counter()
    with open(text / "mono.train", encoding="utf-8") as f:
        for line in f:
            counts.update(line.split() + ["</s>"])
    total, log_prob, pieces = sum(counts.values()), 0.0, 0
    with open(text / "mono.valid", encoding="utf-8") as f:
        for line in f:
            for piece in line.split() + ["</s>"]:
                log_prob += math.log2(counts.get(piece, 0.5) / total)
                pieces += 1
    return 2 ** (-log_prob / max(pieces, 1))


def length_bias(decoded, reference_pieces):
    """Mean (chosen length - reference length) in pieces over the decoded sentences."""
    gaps = [found[0][1] - reference_pieces[i] for i, found in decoded["candidates"].items()]
    return sum(gaps) / max(len(gaps), 1)


def nearest_length_candidates(decoded, reference_pieces):
    """(decoded-like dict of each sentence's candidate nearest the reference length, the
    share of sentences whose reference length is among the candidates, in %)."""
    hypotheses, covered = {}, 0
    for i, found in decoded["candidates"].items():
        gaps = [abs(pieces - reference_pieces[i]) for _, pieces in found]
        hypotheses[i] = found[gaps.index(min(gaps))][0]
        covered += min(gaps) == 0
    return {"hypotheses": hypotheses}, 100.0 * covered / max(len(hypotheses), 1)


def bold_ratio(score, baseline_score, baseline):
    """`**1.23×**`, or a bold dash naming the baseline where it scored 0 BLEU (toy runs can)."""
    if baseline_score > 0:
        return f"**{score / baseline_score:.2f}×**"
    return f"**—** ({baseline} scored 0.00 BLEU)"


def cpu_minutes(run):
    return run.get("cpu_total_s", run["cpu_s"]) / 60


def curve_checkpoints(save_dir, most):
    """(updates, path) of at most ``most`` interval checkpoints, evenly spaced, the last included."""
    found = sorted((int(path.stem.rsplit("_", 1)[1]), path) for path in save_dir.glob("checkpoint_*_*.pt"))
    if len(found) <= most:
        return found
    step = (len(found) - 1) / (most - 1)
    return [found[round(i * step)] for i in range(most)]


def shorten(text, most=160):
    """A table cell: at most ``most`` characters, ``|`` escaped."""
    text = text if len(text) <= most else text[: most - 1] + "…"
    return text.replace("|", "\\|")


CLAIM_TITLES = {
    "a": "(a) Pretrained vs from scratch",
    "b": "(b) Bigger is better",
    "c": "(c) Predicted vs oracle length",
    "d": "(d) Diffusion vs autoregressive",
}


def write_section(doc, claim, body):
    """Replace (or append) the section of ``claim`` in the markdown file ``doc``."""
    start, end = f"<!-- claim {claim} -->", f"<!-- /claim {claim} -->"
    section = f"{start}\n{body}\n{end}"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Reproduction in miniature\n"
    if start in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = doc.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(doc)


# options that say where things go or which stages a driver takes, not what is computed
NOT_RECIPE = {"claim", "workdir", "doc", "train_first", "data"}


def recipe_options(args):
    """The command-line options of ``args`` that differ from their defaults and change what
    the tables hold (sizes, updates, --adapt-args, --smoke, ...), as argv words."""
    parser, words = get_parser(), []
    for action in parser._actions:
        if not action.option_strings or action.dest in NOT_RECIPE | {"help"}:
            continue
        value = getattr(args, action.dest)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        if action.nargs == 0:
            words.append(flag)
        elif isinstance(value, list):
            words += [flag, *map(str, value)]
        else:
            text = str(value)  # "--adapt-args=--bf16-autocast": a value that looks like a flag
            words += [f"{flag}={text}"] if text.startswith("-") else [flag, text]
    return words


SMOKE_LENGTH_BEAMS = [1, 3]  # --smoke: claim (c) at two length beams (fewer decodings)


def main(args):
    options, extras = recipe_options(args), extra_tests(args)
    if args.smoke and args.length_beams == get_parser().get_default("length_beams"):
        args.length_beams = SMOKE_LENGTH_BEAMS
    pipe = Pipeline(args)
    raw = find_data(args.data, [f"mono/train.{lang}" for lang in (SRC, TGT)])
    with tempfile.TemporaryDirectory() as slices:
        if args.smoke:
            slice_corpus(raw, Path(slices), SMOKE_LINES)
            raw = Path(slices)
        prepare_data(pipe, raw)
        for name, prefix in extras.items():
            prepare_extra_test(pipe, name, prefix)
        claims = Claims(pipe, raw, extras)
        for stage in args.train_first:
            claims.train(stage)
        for claim in args.claim:
            body = getattr(claims, claim)()
            command = shlex.join(["python", "-m", "benchmarks.reproduce",
                                  *options, "--claim", claim])
            section = f"## {CLAIM_TITLES[claim]}\n\n`{command}`\n\n{body}"
            print(section, flush=True)
            pipe.record(f"table-{claim}", section)
            if not args.smoke:
                write_section(args.doc, claim, section)


if __name__ == "__main__":
    main(get_parser().parse_args())
