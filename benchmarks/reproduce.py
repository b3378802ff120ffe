#!/usr/bin/env python3
"""
The paper's claims in miniature on Multi30k de->en (docs/REPRODUCTION.md).

One resumable pipeline, run claim by claim (``--claim a b c d e``):

* data: the prompted de->en data (scripts/prepare_prompted.py, a new 8k
  sentencepiece model), the same text unprompted for fairseq's models, and the masked
  LM's corpus: Multi30k task 2's monolingual German and English (``multi30k/mono``)
  plus both sides of the parallel train set, one dictionary;
* mlm-SIZE: a masked LM pretrained with fairseq's own ``masked_lm`` task, keeping a
  checkpoint every ``--mlm-keep-every`` updates;
* adapt-SIZE-INIT: diffusive adaptation from that masked LM (``pretrained``), from
  its checkpoint after N updates (``mlmN``), from random weights on the same batches
  (``scratch``), on the transformer's translations (``distilled``) or from the masked
  LM until validation BLEU stops improving (``converged``);
* length-SIZE-INIT: the paper's stage 2, the separate length predictor on the frozen
  denoiser;
* transformer-SIZE, cmlm-SIZE: fairseq's ``transformer`` and ``cmlm_transformer`` of
  about the same parameter count, trained for the adaptation's CPU time, and
  transformer-SIZE-converged, until validation BLEU stops improving;
* evaluation: fairseq-generate on ``val`` and ``test_2016_flickr``, sacreBLEU with its
  signature, decoding speed at batch size 1 and 64, forward passes, repetition; and,
  in a column of every table, on each ``--extra-test NAME=PREFIX`` (raw parallel files).

Every training resumes from its ``checkpoint_last.pt``; a stage recorded in
``WORKDIR/state.json`` is not run again; each run records its command, wall and CPU time
and whether other processes shared the machine.

``--smoke`` runs every stage at toy sizes on corpus slices (CI); it checks the
tables' shape and the provenance of their runs, never their numbers.
"""

import argparse
import json
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (BASELINES, RAW_SPLITS, REPO, SRC, TGT, USER_DIR, Runner, baseline_args,
                               binarize_unprompted, encode_lines, fairseq_cli, find_data, parse_generate,
                               prepare_translation, slice_corpus, table)

TEMPLATE = "Translate the German sentence to English. German: {src} English:"

# layers x dim (heads, FFN = 4 dim); fairseq's models of each size have about the
# same parameter count with half the layers in the encoder and half in the decoder
SIZES = {
    "micro": {"layers": 3, "dim": 96, "heads": 2},
    "mini": {"layers": 4, "dim": 128, "heads": 2},
    "tiny": {"layers": 6, "dim": 256, "heads": 4},
}
SMOKE_SIZES = {
    "micro": {"layers": 1, "dim": 32, "heads": 2},
    "mini": {"layers": 2, "dim": 32, "heads": 2},
    "tiny": {"layers": 2, "dim": 64, "heads": 2},
}
INITS = r"pretrained|scratch|distilled|converged|mlm\d+"
C_SHARDS = 4  # claim (c) decodes a quarter of test2016: 9 decodings of up to 10 lengths each
SAMPLERS = ["reparam-uncond-deterministic-cosine", "mask-predict", "ancestral", "threshold0.9",
            "dilated", "wino0.5-0.9"]
SMOKE = {  # --smoke: toy schedules on corpus slices (lines of both sides of each raw file)
    "lines": {"train": 1000, "val": 50, "test_2016_flickr": 50, "mono/train": 2000},
    "mlm_updates": 30, "mlm_keep_every": 10, "scaling_points": [0, 10, 30], "size_mlm_updates": 20,
    "adapt_updates": 40, "length_updates": 20, "converge_max_updates": 40, "converge_interval": 10,
    "patience": 2, "length_beams": [1, 3], "sampler_steps": [3], "iter_decode_max_iter": 3,
}
CLAIM_TITLES = {
    "a": "(a) Pretrained vs from scratch",
    "b": "(b) Scaling: pretraining compute and size",
    "c": "(c) Predicted vs oracle length",
    "d": "(d) Diffusion vs autoregressive",
    "e": "(e) Samplers: quality, forward passes and repetition",
}


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--claim", nargs="*", choices=list(CLAIM_TITLES), default=list(CLAIM_TITLES),
        help="claims to run: a pretrained vs scratch, b scaling with pretraining compute and size, "
        "c predicted vs oracle length, d diffusion vs autoregressive (equal time and convergence), "
        "e samplers; none (a bare --claim) with --train-first only trains those stages")
    add("--data", type=Path, help="Multi30k directory (default: ../shared/data/multi30k beside the repository)")
    add("--workdir", type=Path, default=REPO / "work" / "reproduce")
    add("--smoke", action="store_true", help="toy sizes on corpus slices: checks the pipeline (CI)")
    add("--threads", type=int, default=1, help="threads of every run")
    add("--sizes", nargs="+", default=["mini", "micro", "tiny"], choices=list(SIZES),
        help="sizes of claim b's size table; the first is the size of every other table")
    add("--mlm-updates", type=int, default=40000, help="updates of the first size's masked LM")
    add("--mlm-max-tokens", type=int, default=4096)
    add("--mlm-lr", type=float, default=1e-3)
    add("--mlm-keep-every", type=int, default=2000,
        help="keep the masked LM's checkpoint of every N-th update (checkpoint_*_N.pt)")
    add("--scaling-points", type=int, nargs="+", default=[0, 4000, 8000, 16000, 40000],
        help="claim b: masked-LM updates the first size adapts from (0: from scratch)")
    add("--size-mlm-updates", type=int, default=8000,
        help="claim b: every size adapts from its masked LM at this update (the same learning-rate "
        "schedule as the first size's, so the sizes differ in nothing else)")
    add("--adapt-updates", type=int, default=4000)
    add("--adapt-max-tokens", type=int, default=2048)
    add("--adapt-lr", type=float, default=5e-4)
    add("--adapt-args", default="",
        help="extra fairseq-train options of every adaptation run, e.g. --bf16-autocast on a CPU "
        "with native bf16 (AVX512-BF16 or AMX); without it bf16 matrix products are many times "
        "slower than fp32")
    add("--length-updates", type=int, default=500)
    add("--converge-max-updates", type=int, default=30000,
        help="the converged runs stop here at the latest")
    add("--converge-interval", type=int, default=500, help="updates between validations of the converged runs")
    add("--patience", type=int, default=5,
        help="the converged runs stop after this many validations without a better BLEU (fairseq's --patience)")
    add("--iter-decode-max-iter", type=int, default=10)
    add("--length-beams", type=int, nargs="+", default=[1, 3, 5, 10])
    add("--sampler-steps", type=int, nargs="+", default=[10, 50], help="claim e: steps of every sampler")
    add("--samplers", nargs="+", default=SAMPLERS, type=sampler, help="claim e: --decoding-strategy values")
    add("--speed-sentences", type=int, default=100, help="test sentences decoded for the batch-size-1 latency")
    add("--doc", type=Path, default=REPO / "docs" / "REPRODUCTION.md",
        help="where the tables are written (each claim its own section)")
    add("--distill", action="store_true",
        help="claim d adds a separately labelled track (not the paper's): the same masked LM adapted "
        "on the train set's targets re-decoded by the transformer (sequence-level knowledge "
        "distillation, beam 5)")
    add("--seed", type=int, default=1)
    add("--extra-test", action="extend", nargs="+", default=[], type=extra_test, metavar="NAME=PREFIX",
        help=f"also score every trained model of each claim on the raw parallel files PREFIX.{SRC} and "
        f"PREFIX.{TGT} (encoded with the run's sentencepiece model and dictionaries), a column BLEU "
        "NAME in every table; repeatable")
    add("--train-first", nargs="+", default=[], metavar="STAGE", type=stage_name,
        help="train these stages (mlm-SIZE, adapt-SIZE-INIT, length-SIZE-INIT, transformer-SIZE, "
        "transformer-SIZE-converged, cmlm-SIZE) before the claims: splits the trainings between two "
        "drivers that share a --workdir")
    return parser


def stage_name(text):
    """A training stage of --train-first; returns ``text``."""
    sizes = "|".join(SIZES)
    if not re.fullmatch(rf"mlm-({sizes})|transformer-({sizes})(-converged)?|cmlm-({sizes})|"
                        rf"(adapt|length)-({sizes})-({INITS})", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a training stage; use mlm-SIZE, adapt-SIZE-INIT, length-SIZE-INIT, "
            f"transformer-SIZE[-converged] or cmlm-SIZE with SIZE one of {', '.join(SIZES)} and INIT "
            "one of pretrained, scratch, distilled, converged, mlmN")
    return text


def sampler(text):
    """A --decoding-strategy value the plugin's strategy registry accepts; returns ``text``."""
    from diffusion_plugin.strategies import ReverseStrategy

    try:
        ReverseStrategy.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def extra_test(text):
    """--extra-test NAME=PREFIX: a NAME and raw parallel files PREFIX.de and PREFIX.en with
    as many lines each; returns ``text``."""
    name, _, prefix = text.partition("=")
    paths = [Path(f"{prefix}.{lang}") for lang in (SRC, TGT)]
    missing = [path for path in paths if not path.is_file()]
    if not re.fullmatch(r"[\w.-]+", name) or not prefix:
        problem = (f"give NAME=PREFIX (NAME of letters, digits, '_', '.', '-') for the raw parallel files "
                   f"PREFIX.{SRC} and PREFIX.{TGT}")
    elif missing:
        problem = f"{missing[0]} is not a file; PREFIX.{SRC} and PREFIX.{TGT} must both exist"
    else:
        lines = [len(path.read_text(encoding="utf-8").splitlines()) for path in paths]
        problem = lines[0] != lines[1] and (f"{paths[0]} has {lines[0]:,} lines and {paths[1]} {lines[1]:,}; "
                                            "give line-aligned parallel files")
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


class Pipeline(Runner):
    """The work directory of one recipe (its --smoke and --seed), on --threads threads."""

    def __init__(self, args):
        super().__init__(args.workdir, args.threads, {"smoke": args.smoke, "seed": args.seed})
        self.args = args
        self.sizes = SMOKE_SIZES if args.smoke else SIZES


# --------------------------------------------------------------------- data
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
        fairseq_cli("fairseq-preprocess"), "--only-source", "--trainpref", str(text / "mono.train"),
        "--validpref", str(text / "mono.valid"), "--srcdict", str(prompted / f"dict.{SRC}.txt"),
        "--destdir", str(mono)])
    runs["mlm_corpus"] = {
        "files": [str(path) for path in corpus],
        "lines": sum(1 for path in corpus for _ in open(path, encoding="utf-8")),
        "tokens": sum(len(line.split()) for line in open(text / "mono.train", encoding="utf-8")),
    }
    pipe.record("data", runs)


def prompted_with_main_vocabulary(pipe, key, destdir, **prefixes):
    """scripts/prepare_prompted.py on raw files (``trainpref``, ``validpref``, ``testpref``)
    with the prompted data's sentencepiece model and dictionary; the run's provenance."""
    prompted = pipe.workdir / "data-bin" / "de-en"
    return pipe.run(key, [
        sys.executable, str(REPO / "scripts" / "prepare_prompted.py"), "--source-lang", SRC, "--target-lang", TGT,
        *[word for name, prefix in prefixes.items() for word in (f"--{name}", str(prefix))],
        "--template", TEMPLATE, "--spm-model", str(prompted / "sentencepiece.bpe.model"),
        "--dict", str(prompted / f"dict.{TGT}.txt"), "--force", "--destdir", str(destdir)])


def prepare_extra_test(pipe, name, prefix):
    """--extra-test NAME=PREFIX binarized as the split ``test`` of data-bin/extra-NAME
    (prompted) and data-bin/extra-NAME-raw (unprompted), with the prompted data's
    sentencepiece model and dictionary; a NAME keeps the PREFIX it was first given."""
    key = f"data-extra-{name}"
    if pipe.claim(key):
        run = prompted_with_main_vocabulary(pipe, key, pipe.workdir / "data-bin" / f"extra-{name}",
                                            trainpref=prefix, testpref=prefix)
        unprompted = binarize_unprompted(pipe, f"{key}-raw", pipe.workdir / "data-bin" / "de-en", {"test": prefix},
                                         pipe.workdir / "text" / f"extra-{name}",
                                         pipe.workdir / "data-bin" / f"extra-{name}-raw")
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
        originals = references_side(raw, "train", TGT)
        for i in empty:  # an empty translation would be an empty target: keep the reference
            targets[i] = originals[i]
        text = pipe.workdir / "text" / key
        shutil.rmtree(text, ignore_errors=True)
        text.mkdir(parents=True)
        (text / f"train.{SRC}").write_text("".join(f"{line}\n" for line in sources), encoding="utf-8")
        (text / f"train.{TGT}").write_text("".join(f"{line}\n" for line in targets), encoding="utf-8")
        run = prompted_with_main_vocabulary(  # val and test as they are
            pipe, key, pipe.workdir / "data-bin" / f"de-en-distilled-{size_name}", trainpref=text / "train",
            validpref=raw / RAW_SPLITS["valid"], testpref=raw / RAW_SPLITS["test"])
        pipe.record(key, {**run, "decoding": {name: decoded[name] for name in ("command", "cpu_s", "shared")},
                          "pairs": len(sources), "kept_reference": len(empty),
                          "changed": sum(a != b for a, b in zip(targets, originals))})
    return pipe.state["stages"][key]


# ----------------------------------------------------------------- training
def shape_args(size):
    return ["--encoder-layers", str(size["layers"]), "--encoder-embed-dim", str(size["dim"]),
            "--encoder-ffn-embed-dim", str(4 * size["dim"]), "--encoder-attention-heads", str(size["heads"])]


def optimizer_args(lr, updates, seed, total=None, constant=False):
    """Adam with a linear warm-up over 10% of ``total`` updates (default ``updates``), then
    linear decay to 0 at ``total`` (``constant``: no decay); stops after ``updates``."""
    total = total or updates
    schedule = ["fixed"] if constant else ["polynomial_decay", "--total-num-update", str(total)]
    return ["--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6", "--clip-norm", "1.0",
            "--weight-decay", "0.01", "--lr", str(lr), "--lr-scheduler", *schedule,
            "--warmup-updates", str(max(1, total // 10)), "--max-update", str(updates), "--seed", str(seed),
            "--cpu", "--num-workers", "0", "--log-format", "simple", "--log-interval", "50", "--no-epoch-checkpoints"]


def until_converged(args, metric_args):
    """fairseq-train options that validate BLEU every --converge-interval updates (not at
    the end of each epoch), keep the best checkpoint and stop after --patience validations
    without a better one."""
    return ["--patience", str(args.patience), "--validate-interval", "1000", "--save-interval", "1000",
            "--validate-interval-updates", str(args.converge_interval),
            "--save-interval-updates", str(args.converge_interval), "--keep-interval-updates", "1",
            "--eval-bleu", "--eval-bleu-args", json.dumps(metric_args), "--eval-bleu-detok", "space",
            "--eval-bleu-remove-bpe", "sentencepiece", "--best-checkpoint-metric", "bleu",
            "--maximize-best-checkpoint-metric"]


def train_mlm(pipe, size_name):
    """fairseq's masked_lm (RoBERTa) on the monolingual corpus; returns its save dir. The
    first size trains for --mlm-updates, the others for --size-mlm-updates, all on the
    first size's learning-rate schedule."""
    key = f"mlm-{size_name}"
    save_dir = pipe.workdir / "checkpoints" / key
    if pipe.claim(key):
        args = pipe.args
        updates = args.mlm_updates if size_name == args.sizes[0] else args.size_mlm_updates
        cmd = [fairseq_cli("fairseq-train"), str(pipe.workdir / "data-bin" / "mono"),
               "--user-dir", str(USER_DIR),  # only for loading checkpoints under torch >= 2.6
               "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta",
               *shape_args(pipe.sizes[size_name]), "--max-positions", "256",
               "--tokens-per-sample", "128", "--sample-break-mode", "complete",
               "--dropout", "0.1", "--attention-dropout", "0.1",
               *optimizer_args(args.mlm_lr, updates, args.seed, args.mlm_updates),
               "--max-tokens", str(args.mlm_max_tokens),
               "--save-interval-updates", "10" if args.smoke else "250", "--keep-interval-updates", "1",
               "--keep-interval-updates-pattern", str(args.mlm_keep_every),
               "--validate-interval-updates", "10" if args.smoke else "1000",
               "--skip-invalid-size-inputs-valid-test", "--save-dir", str(save_dir)]
        run = pipe.run(key, cmd)
        last = (validations(pipe.workdir / "logs" / f"{key}.log") or [{}])[-1]
        pipe.record(key, {**run, **{f"valid_{name}": value for name, value in last.items()}})
    return save_dir


VALID_RE = re.compile(r"valid on 'valid' subset \| (.*)")


def validations(log_path):
    """Every ``valid on 'valid'`` line of a fairseq-train log as a dict of floats."""
    found = []
    for line in VALID_RE.findall(log_path.read_text(errors="replace") if log_path.exists() else ""):
        values = {}
        for item in line.split(" | "):
            name, _, value = item.partition(" ")
            try:
                values[name] = float(value.replace(",", ""))
            except ValueError:
                pass
        found.append(values)
    return found


def plugin_training(pipe, size_name, init):
    """The fairseq-train words every training of the plugin's model of ``size_name`` starts with."""
    data = f"de-en-distilled-{size_name}" if init == "distilled" else "de-en"
    return [fairseq_cli("fairseq-train"), str(pipe.workdir / "data-bin" / data), "--user-dir", str(USER_DIR),
            "--task", "prompted_translation", "-s", SRC, "-t", TGT, "--arch", "diffusion_xlmr_tiny",
            *shape_args(pipe.sizes[size_name]), "--max-positions", "256",
            "--max-tokens", str(pipe.args.adapt_max_tokens), "--required-batch-size-multiple", "1"]


def adapt(pipe, size_name, init, start):
    """Diffusive adaptation on de->en (stage 1, no joint length loss) from the masked-LM
    checkpoint ``start`` (None: random weights); its save dir.

    ``scratch`` adds label smoothing 0.1 (the paper's setting for models without
    pretraining, §A.1) and sees the same batches in the same order as ``pretrained``;
    ``distilled`` reads the distilled data (:func:`distill`); ``converged`` trains until
    validation BLEU at the oracle length (stage 1 has no length predictor yet) stops
    improving, on the same schedule's warm-up and peak, without its decay.
    """
    key = f"adapt-{size_name}-{init}"
    save_dir = pipe.workdir / "checkpoints" / key
    if pipe.claim(key):
        args = pipe.args
        cmd = [*plugin_training(pipe, size_name, init), "--criterion", "masked_diffusion",
               "--length-loss-factor", "0", "--dropout", "0.1", "--fixed-validation-seed", "7",
               "--save-dir", str(save_dir), *shlex.split(args.adapt_args)]
        if init == "converged":  # the warm-up and peak of the others' schedule, then a constant rate
            cmd += optimizer_args(args.adapt_lr, args.converge_max_updates, args.seed, args.adapt_updates, True)
            cmd += until_converged(args, {"iter_decode_max_iter": args.iter_decode_max_iter, "oracle_length": True})
        else:
            interval = str(max(10, args.adapt_updates // 6))
            cmd += optimizer_args(args.adapt_lr, args.adapt_updates, args.seed)
            cmd += ["--save-interval-updates", interval, "--keep-interval-updates", "1",
                    "--validate-interval-updates", interval]
        if start is not None:
            cmd += ["--pretrained-mlm", str(start), "--pretrained-vocab", "full"]
        else:
            cmd += ["--label-smoothing", "0.1"]
        pipe.record(key, pipe.run(key, cmd))
    return save_dir


def train_length(pipe, size_name, init):
    """The paper's stage 2: the separate length predictor on the frozen denoiser (the best
    checkpoint of a converged adaptation, the last of the others)."""
    key = f"length-{size_name}-{init}"
    save_dir = pipe.workdir / "checkpoints" / key
    if pipe.claim(key):
        args = pipe.args
        denoiser = pipe.workdir / "checkpoints" / f"adapt-{size_name}-{init}"
        cmd = [*plugin_training(pipe, size_name, init), "--length-predictor", "separate",
               "--criterion", "length_prediction", "--finetune-from-model",
               str(denoiser / ("checkpoint_best.pt" if init == "converged" else "checkpoint_last.pt")),
               *optimizer_args(1e-3, args.length_updates, args.seed), "--disable-validation",
               "--save-interval-updates", str(max(10, args.length_updates // 4)), "--keep-interval-updates", "1",
               "--save-dir", str(save_dir), *shlex.split(args.adapt_args)]
        pipe.record(key, pipe.run(key, cmd))
    return save_dir / "checkpoint_last.pt"


def train_baseline(pipe, arch, size_name, seconds=None):
    """fairseq's ``arch`` (half the layers each side) for ``seconds`` of training, or
    (None) until validation BLEU (beam 5) stops improving; its save dir."""
    key = f"{arch}-{size_name}" + ("" if seconds else "-converged")
    save_dir = pipe.workdir / "checkpoints" / key
    if pipe.claim(key):
        size, args = pipe.sizes[size_name], pipe.args
        half, interval = max(1, size["layers"] // 2), "10" if args.smoke else "250"
        cmd = [fairseq_cli("fairseq-train"), str(pipe.workdir / "data-bin" / "de-en-raw"),
               "--user-dir", str(USER_DIR),  # only for loading checkpoints under torch >= 2.6
               "-s", SRC, "-t", TGT, *baseline_args(arch, half, size["dim"], size["heads"]),
               "--dropout", "0.1", "--label-smoothing", "0.1",
               "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--clip-norm", "1.0",
               "--weight-decay", "0.01", "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt",
               "--warmup-updates", "40" if args.smoke else "1000", "--warmup-init-lr", "1e-07",
               "--max-tokens", "4096", "--seed", str(args.seed), "--cpu", "--num-workers", "0",
               "--log-format", "simple", "--log-interval", "50", "--no-epoch-checkpoints",
               "--save-dir", str(save_dir)]
        if seconds:
            cmd += ["--stop-time-hours", f"{seconds / 3600:.6f}", "--save-interval-updates", interval,
                    "--keep-interval-updates", "1", "--validate-interval-updates", interval]
        else:
            cmd += ["--max-update", str(args.converge_max_updates), *until_converged(args, {"beam": 5})]
        pipe.record(key, pipe.run(key, cmd))
    return save_dir


def checkpoint_facts(checkpoint):
    """Parameters (unique, length predictor excluded) and updates of a checkpoint."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    unique = {}
    for name, value in state["model"].items():
        if not name.startswith(("length_predictor.", "length_head.")):
            unique.setdefault((value.data_ptr(), tuple(value.shape)), value.numel())
    return {"parameters": sum(unique.values()), "updates": state["optimizer_history"][-1]["num_updates"]}


# --------------------------------------------------------------- evaluation
def generate(pipe, key, checkpoint, split, kind, extra=(), batch_size=64, shards=None):
    """fairseq-generate on ``split``; returns hypotheses by id, sentences/s, steps and its stage name.

    ``kind`` is ``diffusion`` (the plugin), ``ar`` (beam 5) or ``cmlm`` (fairseq's
    iterative refinement, 3 length candidates). ``shards`` (N, i) decodes fairseq-generate's
    shard i of N (``--num-shards``), a fixed subset. ``split`` ``extra-NAME`` is
    --extra-test NAME (:func:`prepare_extra_test`).
    """
    name = f"generate-{key}-{split}" + (f"-shard{shards[1]}of{shards[0]}" if shards else "")
    name += f"-bs{batch_size}" if batch_size != 64 else ""
    if pipe.claim(name):
        args, subset = pipe.args, split
        raw = "" if kind == "diffusion" else "-raw"
        data = pipe.workdir / "data-bin" / f"de-en{raw}"
        if split.startswith("extra-"):
            data, subset = pipe.workdir / "data-bin" / f"{split}{raw}", "test"
        steps = ["--iter-decode-max-iter", str(args.iter_decode_max_iter), "--print-step"]
        cmd = [fairseq_cli("fairseq-generate"), str(data), "--user-dir", str(USER_DIR), *{
            "diffusion": ["--task", "prompted_translation", *steps],
            "cmlm": ["--task", "translation_lev", *steps, "--iter-decode-with-beam", "3",
                     "--iter-decode-eos-penalty", "0"],
            # --smoke: an untrained transformer writes fairseq's 200-token maximum
            "ar": ["--task", "translation", "--beam", "5"] + (["--max-len-a", "1.2", "--max-len-b", "10"]
                                                              if args.smoke else []),
        }[kind]]
        cmd += [
            "-s", SRC, "-t", TGT, "--path", str(checkpoint), "--gen-subset", subset,
            "--batch-size", str(batch_size), "--required-batch-size-multiple", "1",
            "--post-process", "sentencepiece", "--cpu", "--num-workers", "0", *extra,
        ]
        if shards:
            cmd += ["--num-shards", str(shards[0]), "--shard-id", str(shards[1])]
        run = pipe.run(name, cmd)
        run.update(parse_generate(pipe.output(name)))
        pipe.record(name, run)
    return {**pipe.state["stages"][name], "stage": name}


def references_side(raw, split, lang):
    """The raw lines of one side of a split."""
    with open(raw / f"{RAW_SPLITS[split]}.{lang}", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


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


def forward_passes(decoded):
    """Network calls per sentence: the mean refinement steps of an iterative decoder, or
    the mean output length plus end of sentence of an autoregressive one."""
    lengths = [found[0][1] + 1 for found in decoded["candidates"].values()]
    return decoded["mean_steps"] or sum(lengths) / max(len(lengths), 1)


def diffusion_options(beam=3, oracle=False, selection="score", collapse=False, strategy=None, steps=None):
    """(key suffix, fairseq-generate options) of one decoding setting."""
    options = ["--iter-decode-with-beam", str(beam), "--nbest", str(beam), "--candidate-selection", selection]
    suffix = f"lb{beam}" + ("-oracle" if oracle else "") + ("" if selection == "score" else f"-{selection}")
    options += ["--oracle-length"] if oracle else []
    if strategy is not None:  # claim e: after generate()'s own --iter-decode-max-iter, so it wins
        options += ["--decoding-strategy", strategy, "--iter-decode-max-iter", str(steps)]
        suffix += f"-{strategy}-K{steps}"
    options += ["--collapse-repeats"] if collapse else []
    return suffix + ("-collapse" if collapse else ""), options


# ------------------------------------------------------------------- claims
class Claims:
    """Runs what each claim needs (skipping what is done) and returns its table."""

    def __init__(self, pipe, raw, extras):
        self.pipe, self.raw, self.args = pipe, raw, pipe.args
        self.refs = {split: references_side(raw, split, TGT) for split in ("valid", "test")}
        for name, prefix in extras.items():  # --extra-test
            self.refs[f"extra-{name}"] = Path(f"{prefix}.{TGT}").read_text(encoding="utf-8").splitlines()
        self.extras = [f"extra-{name}" for name in extras]
        self.extra_header = [f"BLEU {name}" for name in extras]
        self.size = self.args.sizes[0]

    # ---- stages, each with what it needs first
    def mlm(self, size, updates=None):
        """The masked LM of ``size``: its last checkpoint, or its kept one after ``updates``."""
        save_dir = self.pipe.workdir / "checkpoints" / f"mlm-{size}"
        pattern = f"checkpoint_*_{updates}.pt" if updates else "checkpoint_last.pt"
        if not updates or not any(save_dir.glob(pattern)):
            train_mlm(self.pipe, size)
        found = sorted(save_dir.glob(pattern))
        if not found:
            raise SystemExit(f"{save_dir} keeps no checkpoint of update {updates}: --mlm-keep-every "
                             f"{self.args.mlm_keep_every} must divide it and the masked LM reach it")
        return found[-1]

    def adapted(self, size, init):
        """The stage-1 save dir of size/init, with what it needs first."""
        if init == "distilled":
            distill(self.pipe, self.raw, size, self.baseline("transformer", size))
        start = None if init == "scratch" else self.mlm(size, int(init[3:]) if init.startswith("mlm") else None)
        return adapt(self.pipe, size, init, start)

    def denoiser(self, size, init):
        """The stage-2 checkpoint (denoiser + separate length predictor) of size/init."""
        self.adapted(size, init)
        return train_length(self.pipe, size, init)

    def baseline(self, arch, size, converged=False):
        """fairseq's ``arch`` trained until convergence or for the CPU time of the
        from-scratch adaptation: the same network on the same batches for the same updates as
        the pretrained one (so two drivers can start at once), summed over its invocations."""
        if converged:
            return train_baseline(self.pipe, arch, size) / "checkpoint_best.pt"
        self.adapted(size, "scratch")
        seconds = cpu_minutes(self.pipe.state["stages"][f"adapt-{size}-scratch"]) * 60
        return train_baseline(self.pipe, arch, size, seconds) / "checkpoint_last.pt"

    def train(self, stage):
        """Train one stage (:func:`stage_name`) and what it needs (``--train-first``)."""
        kind, size, *rest = stage.split("-")
        if kind == "mlm":
            self.mlm(size)
        elif kind in BASELINES:
            self.baseline(kind, size, converged=bool(rest))
        else:
            (self.adapted if kind == "adapt" else self.denoiser)(size, rest[0])

    # ---- decoding and cells
    def decode(self, size, init, split, shards=None, batch_size=64, **setting):
        suffix, options = diffusion_options(**setting)
        decoded = generate(self.pipe, f"{size}-{init}-{suffix}", self.denoiser(size, init), split,
                           "diffusion", options, batch_size=batch_size, shards=shards)
        return decoded, bleu(decoded, self.refs[split])

    def extra_scores(self, size, init, **setting):
        """BLEU of one diffusion model and decoding setting on every --extra-test, as cells."""
        return [f"{self.decode(size, init, split, **setting)[1][0]:.2f}" for split in self.extras]

    def shared(self, *keys):
        stages = self.pipe.state["stages"]
        names = [key for key in keys if stages.get(key, {}).get("shared")]
        return "shared (" + ", ".join(names) + ")" if names else "alone"

    def facts(self, key, checkpoint="checkpoint_last.pt"):
        return checkpoint_facts(self.pipe.workdir / "checkpoints" / key / checkpoint)

    def latency_shards(self):
        return 25 if self.args.smoke else max(1, 1000 // self.args.speed_sentences)

    # ---- the claims
    def a(self):
        rows, test = [], {}
        for init in ("pretrained", "scratch"):
            (_, (valid, _)), (decoded, (test[init], signature)) = (
                self.decode(self.size, init, split) for split in ("valid", "test"))
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
             f"{bold_ratio(test['pretrained'], test['scratch'], 'from scratch')}. sacreBLEU `{signature}`."])

    def b(self):
        """BLEU against masked-LM pretraining compute (the first size) and against size."""
        args = self.args
        compute_rows, points = [], {}
        for updates in args.scaling_points:
            init, test, signature, hours, perplexity, extra = self.scaling_point(self.size, updates)
            points[hours] = test
            compute_rows.append([f"{updates:,}" + (" (from scratch)" if updates == 0 else ""), f"{hours:.2f}",
                                 perplexity, f"{test:.2f}", *extra,
                                 self.shared(f"mlm-{self.size}", f"adapt-{self.size}-{init}")])
        size_rows, sizes = [], {}
        for size in args.sizes:
            init, test, signature, hours, perplexity, extra = self.scaling_point(size, args.size_mlm_updates)
            facts, shape = self.facts(f"adapt-{size}-{init}"), self.pipe.sizes[size]
            sizes[facts["parameters"]] = test
            size_rows.append([f"{size} ({shape['layers']} × {shape['dim']})", f"{facts['parameters'] / 1e6:.2f}M",
                              f"{args.size_mlm_updates:,}", f"{hours:.2f}", perplexity, f"{test:.2f}", *extra,
                              self.shared(f"mlm-{size}", f"adapt-{size}-{init}", f"length-{size}-{init}")])
        size_rows.sort(key=lambda row: float(row[1][:-1]))
        compute_picture = self.picture("scaling_compute", {self.size: points},
                                       "masked-LM pretraining, CPU hours", "symlog")
        size_picture = self.picture("scaling_size", {f"masked LM at {args.size_mlm_updates:,} updates": sizes},
                                    "parameters", "log")
        unigram = unigram_perplexity(self.pipe.workdir / "text")
        adaptation = (f"Every adaptation: {args.adapt_updates:,} updates, then its length predictor; BLEU on "
                      f"test2016 with 3 length candidates. sacreBLEU `{signature}`.")
        return (f"### Against pretraining compute ({self.size})\n\n" + table(
            ["masked-LM updates", "masked-LM CPU hours", "masked-LM valid ppl", "BLEU test2016",
             *self.extra_header, "runs"], compute_rows,
            [f"CPU hours of the masked LM up to that update: its total CPU time × the share of its updates. "
             f"The unigram model of the masked LM's corpus has perplexity {unigram:.1f} on its valid text "
             f"(fairseq's masked LM scores only the masked 15 %). {adaptation}",
             f"![BLEU against pretraining compute](img/{compute_picture})"])
            + "\n\n### Against size\n\n" + table(
            ["size", "parameters", "masked-LM updates", "masked-LM CPU hours", "masked-LM valid ppl",
             "BLEU test2016", *self.extra_header, "runs"], size_rows,
            [f"Every size's masked LM stops at {args.size_mlm_updates:,} updates on the same learning-rate "
             f"schedule (that of {args.mlm_updates:,} updates) and the same batches. {adaptation}",
             f"![BLEU against size](img/{size_picture})"]))

    def scaling_point(self, size, updates):
        """(init, test BLEU, signature, masked-LM CPU hours, masked-LM perplexity cell, --extra-test
        cells) of ``size`` adapted from its masked LM after ``updates`` (0: from scratch)."""
        first = size == self.size and updates == self.args.mlm_updates
        init = "scratch" if updates == 0 else "pretrained" if first else f"mlm{updates}"
        _, (test, signature) = self.decode(size, init, "test")
        self.mlm(size)  # its whole run, for its CPU time
        return (init, test, signature, mlm_cpu_hours(self.pipe, size, updates),
                mlm_perplexity(self.pipe, size, updates), self.extra_scores(size, init))

    def c(self):
        rows, why_rows, beams, size = [], [], self.args.length_beams, self.size
        shards = (1, 0) if self.args.smoke else (C_SHARDS, 0)  # the first of C_SHARDS parts of test
        oracle_decoded, (oracle, _) = self.decode(size, "pretrained", "test", shards, beam=1, oracle=True)
        reference_pieces = {i: found[0][1] for i, found in oracle_decoded["candidates"].items()}
        for selection in ("score", "joint"):
            cells, biases, widest = [], [], None
            for beam in beams:  # one candidate: every selection keeps it
                decoded, (score, _) = self.decode(size, "pretrained", "test", shards, beam=beam,
                                                  selection=selection if beam > 1 else "score")
                cells.append(score)
                biases.append(length_bias(decoded, reference_pieces))
                widest = decoded
            rows.append([size, selection, *[f"{c:.2f}" for c in cells], f"{oracle:.2f}",
                         f"{oracle - cells[-1]:+.2f}", *self.extra_scores(
                             size, "pretrained", beam=beams[-1], selection=selection if beams[-1] > 1 else "score")])
            # the widest beam: is the reference length among its candidates, and what
            # would picking the candidate nearest to it score?
            nearest, covered = nearest_length_candidates(widest, reference_pieces)
            why_rows.append([size, selection, *[f"{b:+.2f}" for b in biases],
                             f"{covered:.1f}%", f"{bleu(nearest, self.refs['test'])[0]:.2f}"])
        header = ["size", "candidate selection", *[f"LB {b}" for b in beams], "oracle length", "oracle − last LB",
                  *[f"{name} (LB {beams[-1]})" for name in self.extra_header]]
        part = "all of test2016" if self.args.smoke else (
            f"the first of {C_SHARDS} shards of test2016 (fairseq-generate --num-shards {C_SHARDS} "
            f"--shard-id 0, {len(oracle_decoded['hypotheses'])} sentences)")
        why = table(
            ["size", "candidate selection", *[f"length error LB {b}" for b in beams],
             f"reference length among LB {beams[-1]}'s candidates",
             f"LB {beams[-1]}, the candidate nearest the reference length"], why_rows,
            ["Length error: the mean of (chosen length − reference length) in sentencepiece pieces (the "
             "reference length is the oracle decode's); negative means the chosen candidates are too "
             "short. The last column picks, among the same decoded candidates, the one whose length is "
             "nearest the reference: what a perfect selection among them would score."])
        return table(header, rows, [
            f"BLEU on {part} with the separate (stage-2) length predictor; LB k decodes the predictor's k "
            "most likely lengths and keeps the candidate chosen by the selection rule (`score`: mean token "
            "log-prob, the paper's; `joint`: (Σ log p_i + log P(L)) / (L + 1) with P(L) from the predictor, "
            "`--candidate-selection joint`)."
        ]) + "\n\n### Why more length candidates can hurt\n\n" + why

    def evaluated(self, name, checkpoint, kind, options=()):
        """(test decoding, its BLEU, its signature, the batch-size-1 decoding, the --extra-test
        cells) of one system; --collapse-repeats only post-processes, so bs 1 runs without it."""
        decoded = generate(self.pipe, name, checkpoint, "test", kind, options)
        single = generate(self.pipe, name.replace("-collapse", ""), checkpoint, "test", kind,
                          [o for o in options if o != "--collapse-repeats"], batch_size=1,
                          shards=(self.latency_shards(), 0))
        extra = [f"{self.decoded_bleu(name, checkpoint, kind, options, split):.2f}" for split in self.extras]
        return (decoded, *bleu(decoded, self.refs["test"]), single, extra)

    def d(self):
        args, size = self.args, self.size
        suffix, options = diffusion_options()
        collapsed_suffix, collapsed = diffusion_options(collapse=True)

        def diffusion(label, init, settings=options, name_suffix=suffix):
            return (label, f"{size}-{init}-{name_suffix}", self.denoiser(size, init), "diffusion",
                    f"adapt-{size}-{init}", settings, init == "converged")

        def fairseq(label, arch, converged=False):
            key = f"{arch}-{size}" + ("-converged" if converged else "")
            kind = "ar" if arch == "transformer" else arch
            return label, key, self.baseline(arch, size, converged), kind, key, [], converged

        equal, converged = "fairseq transformer, beam 5", ("converged: diffusion (masked LM, then adapted)",
                                                          "converged: fairseq transformer, beam 5")
        systems = [diffusion("diffusion (masked LM, then adapted)", "pretrained"),
                   diffusion("the same, `--collapse-repeats`", "pretrained", collapsed, collapsed_suffix)]
        if args.distill:
            systems.append(diffusion("distilled track (not the paper's): the same masked LM adapted on the "
                                     "transformer's translations", "distilled"))
        systems += [fairseq(equal, "transformer"), fairseq("fairseq cmlm_transformer, 10 steps, 3 lengths", "cmlm"),
                    diffusion(converged[0], "converged"), fairseq(converged[1], "transformer", converged=True)]
        rows, scores = [], {}
        for label, name, checkpoint, kind, train_key, settings, best in systems:
            decoded, scores[label], signature, single, extra = self.evaluated(name, checkpoint, kind, settings)
            collapsed_rows = "--collapse-repeats" in settings  # the canvases of the row above: test only
            valid = "—" if collapsed_rows else f"{self.decoded_bleu(name, checkpoint, kind, settings):.2f}"
            facts = self.facts(train_key, "checkpoint_best.pt" if best else "checkpoint_last.pt")
            steps = decoded["mean_steps"]
            rows.append([
                label, f"{facts['parameters'] / 1e6:.2f}M", f"{cpu_minutes(self.pipe.state['stages'][train_key]):.1f}",
                f"{facts['updates']:,}", valid, f"{scores[label]:.2f}", *extra,
                f"{single['sentences_per_second']:.2f}", f"{decoded['sentences_per_second']:.2f}",
                f"{steps:.1f}" if steps else "one per token", f"{repetition(decoded):.2f}%",
                self.shared(train_key, decoded["stage"], single["stage"])])
        ratio = lambda label, baseline: bold_ratio(scores[label], scores[baseline], "the transformer")  # noqa: E731
        distilled = ""
        if args.distill:
            stage = self.pipe.state["stages"][f"distill-{size}"]
            distilled = (
                f" Distilled track / autoregressive: {ratio(systems[2][0], equal)} at the same adaptation updates; "
                f"its teacher is the transformer of equal time, whose beam-5 translations of the {stage['pairs']:,} "
                f"train sources ({stage['decoding']['cpu_s'] / 60:.1f} CPU min to decode; {stage['changed']:,} "
                f"differ from the reference, {stage['kept_reference']} empty ones kept the reference) replace the "
                "train targets.")
        scratch = cpu_minutes(self.pipe.state["stages"][f"adapt-{size}-scratch"])
        return table(
            ["system", "parameters", "training CPU min", "updates", "BLEU val", "BLEU test2016",
             *self.extra_header, "sent/s bs 1", "sent/s bs 64", "decoding steps", "repeated adjacent words", "runs"],
            rows,
            [f"Diffusion / autoregressive BLEU on test2016 at equal training time: {ratio(systems[0][0], equal)}; "
             f"at convergence: {ratio(*converged)}.{distilled} The budget of fairseq's models of equal time was "
             f"the CPU time of `adapt-{size}-scratch`, {scratch:.1f} min (the same network, batches and updates as "
             f"the pretrained adaptation). The converged runs validate every {args.converge_interval:,} updates "
             "(BLEU on val: the diffusion model at the oracle length, as stage 1 has no length predictor; the "
             f"transformer with beam 5), keep the best checkpoint and stop after {args.patience} validations "
             "without a better one (`--patience`); their training CPU time counts every update made. The "
             "`--collapse-repeats` row decodes the same canvases (its bs 1 speed is the row above's). "
             f"sacreBLEU `{signature}`."],
        ) + "\n\n### Time to quality\n\n" + self.curves() + "\n\n### Examples (test2016)\n\n" + self.examples()

    def decoded_bleu(self, name, checkpoint, kind, options=(), split="valid"):
        return bleu(generate(self.pipe, name, checkpoint, split, kind, options), self.refs[split])[0]

    def e(self):
        """Every sampler of --samplers at every K of --sampler-steps on the converged model."""
        rows, curves, size = [], {}, self.size

        def row(label, steps, name, checkpoint, kind, options=()):
            decoded, test, signature, single, extra = self.evaluated(name, checkpoint, kind, options)
            passes = forward_passes(decoded)
            curves.setdefault(label.strip("`"), {})[passes] = test
            rows.append([label, steps, f"{test:.2f}", *extra, f"{passes:.1f}", f"{repetition(decoded):.2f}%",
                         f"{single['sentences_per_second']:.2f}", f"{decoded['sentences_per_second']:.2f}",
                         self.shared(decoded["stage"], single["stage"])])
            return signature

        for strategy in self.args.samplers:
            for steps in self.args.sampler_steps:
                suffix, options = diffusion_options(strategy=strategy, steps=steps)
                row(f"`{strategy}`", steps, f"{size}-converged-{suffix}", self.denoiser(size, "converged"),
                    "diffusion", options)
        signature = row("fairseq transformer (converged), beam 5", "—", f"transformer-{size}-converged",
                        self.baseline("transformer", size, converged=True), "ar")
        picture = self.picture("samplers", curves, "forward passes per sentence", "log", marker_only=True)
        return table(
            ["sampler (`--decoding-strategy`)", "steps K", "BLEU test2016", *self.extra_header, "forward passes",
             "repeated adjacent words", "sent/s bs 1", "sent/s bs 64", "runs"], rows,
            [f"The converged diffusion model of claim (d) (`adapt-{size}-converged` with its length "
             "predictor), 3 length candidates, batch size 64. Forward passes: the mean denoiser calls per "
             "sentence (each over all its length candidates; a sampler that commits faster stops early), or "
             "for the transformer its mean output length plus end of sentence (one decoder call per token, "
             f"5 beams each). Batch size 1 over a {self.latency_shards()}th of test2016. sacreBLEU `{signature}`.",
             f"![BLEU against forward passes](img/{picture})"])

    # ---- pictures and examples
    def picture(self, name, lines, xlabel, xscale, marker_only=False):
        """One plot of BLEU (y) against x, a line (or marker group) per entry of ``lines``
        ({label: {x: BLEU}}), saved as docs/img/NAME.png (--smoke: in the work dir); its file name."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(6.5, 4))
        for label, points in lines.items():
            xs = sorted(points)
            axes.plot(xs, [points[x] for x in xs], marker="o", linestyle="none" if marker_only else "-", label=label)
        axes.set_xscale(xscale)
        axes.set(xlabel=xlabel, ylabel="BLEU test2016")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        figure.tight_layout()
        folder = self.pipe.workdir if self.args.smoke else self.args.doc.parent / "img"
        folder.mkdir(parents=True, exist_ok=True)
        figure.savefig(folder / f"{name}.png", dpi=110)
        plt.close(figure)
        return f"{name}.png"

    def curves(self):
        """Validation BLEU against training CPU minutes of the converged runs: a table and
        docs/img/time_to_quality.png. A validation's CPU time is the run's CPU time × the share
        of its updates made by then."""
        lines, rows = {}, []
        for key in (f"adapt-{self.size}-converged", f"transformer-{self.size}-converged"):
            run = self.pipe.state["stages"][key]
            found = [v for v in validations(self.pipe.workdir / "logs" / f"{key}.log") if "bleu" in v]
            last = max(v["num_updates"] for v in found)
            points = {cpu_minutes(run) * v["num_updates"] / last: v["bleu"] for v in found}
            lines[key] = points
            rows.append([key, *[f"{minutes:.1f} min: {score:.2f}" for minutes, score in sorted(points.items())]])
        width = max(len(row) for row in rows)
        picture = self.picture("time_to_quality", lines, "training CPU minutes", "linear")
        return table(["run", *[f"validation {i}" for i in range(1, width)]],
                     [row + [""] * (width - len(row)) for row in rows],
                     ["Validation BLEU on val (the diffusion model at the oracle length, the transformer with beam 5).",
                      f"![validation BLEU against training CPU minutes](img/{picture})"])

    def examples(self, count=4):
        """The first ``count`` test sentences with the reference and both converged systems' output."""
        suffix, _ = diffusion_options()
        stages = self.pipe.state["stages"]
        diffusion = stages[f"generate-{self.size}-converged-{suffix}-test"]["hypotheses"]
        ar = stages[f"generate-transformer-{self.size}-converged-test"]["hypotheses"]
        sources = references_side(self.raw, "test", SRC)
        rows = [[sources[i], self.refs["test"][i], diffusion.get(str(i), ""), ar.get(str(i), "")]
                for i in range(min(count, len(sources)))]
        return table(["source", "reference", "diffusion (converged)", "transformer (converged)"],
                     [[shorten(cell) for cell in row] for row in rows])


def mlm_cpu_hours(pipe, size, updates):
    """CPU hours of the masked LM of ``size`` up to ``updates``: its total × the share of its updates."""
    if updates == 0:
        return 0.0
    run = pipe.state["stages"][f"mlm-{size}"]
    total = checkpoint_facts(pipe.workdir / "checkpoints" / f"mlm-{size}" / "checkpoint_last.pt")["updates"]
    return cpu_minutes(run) / 60 * updates / total


def mlm_perplexity(pipe, size, updates):
    """The masked LM's valid perplexity logged at ``updates`` (a cell; "—" where none was)."""
    found = [v["ppl"] for v in validations(pipe.workdir / "logs" / f"mlm-{size}.log")
             if v.get("num_updates") == updates]
    return f"{found[-1]:.1f}" if found else "—"


def unigram_perplexity(text):
    """Perplexity on TEXT/mono.valid of the unigram model of TEXT/mono.train (each line
    ends with ``</s>``; an unseen piece counts half an occurrence)."""
    import collections
    import math

    def pieces(name):
        with open(text / name, encoding="utf-8") as f:
            return [piece for line in f for piece in line.split() + ["</s>"]]

    counts = collections.Counter(pieces("mono.train"))
    total, valid = sum(counts.values()), pieces("mono.valid")
    return 2 ** (-sum(math.log2(counts.get(piece, 0.5) / total) for piece in valid) / max(len(valid), 1))


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


def shorten(text, most=160):
    """A table cell: at most ``most`` characters, ``|`` escaped."""
    text = text if len(text) <= most else text[: most - 1] + "…"
    return text.replace("|", "\\|")


def write_section(doc, claim, body):
    """Replace (or append) the section of ``claim`` in the markdown file ``doc``."""
    from diffusion_plugin.tools.files import write_atomically

    start, end = f"<!-- claim {claim} -->", f"<!-- /claim {claim} -->"
    section = f"{start}\n{body}\n{end}"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Reproduction in miniature\n"
    if start in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    write_atomically(doc, text)


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


def main(args):
    options, extras = recipe_options(args), dict(text.split("=", 1) for text in args.extra_test)
    if len(extras) != len(args.extra_test):
        raise SystemExit(f"--extra-test: each NAME once, not {' '.join(args.extra_test)}")
    extras = {name: Path(prefix).resolve() for name, prefix in extras.items()}
    if args.smoke:  # toy schedules, unless given
        for name, value in SMOKE.items():
            if name != "lines" and getattr(args, name) == get_parser().get_default(name):
                setattr(args, name, value)
    kept = [n for n in [*args.scaling_points, args.size_mlm_updates] if n not in (0, args.mlm_updates)]
    if any(n % args.mlm_keep_every or n > args.mlm_updates for n in kept):
        raise SystemExit(f"--scaling-points {' '.join(map(str, args.scaling_points))} and --size-mlm-updates "
                         f"{args.size_mlm_updates}: each needs a kept masked-LM checkpoint, a multiple of "
                         f"--mlm-keep-every {args.mlm_keep_every} up to --mlm-updates {args.mlm_updates} (or 0)")
    pipe = Pipeline(args)
    raw = find_data(args.data, [f"mono/train.{lang}" for lang in (SRC, TGT)])
    with tempfile.TemporaryDirectory() as slices:
        if args.smoke:
            slice_corpus(raw, Path(slices), SMOKE["lines"])
            raw = Path(slices)
        prepare_data(pipe, raw)
        for name, prefix in extras.items():
            prepare_extra_test(pipe, name, prefix)
        claims = Claims(pipe, raw, extras)
        for stage in args.train_first:
            claims.train(stage)
        for claim in args.claim:
            body = getattr(claims, claim)()
            command = shlex.join(["python", "-m", "benchmarks.reproduce", *options, "--claim", claim])
            section = f"## {CLAIM_TITLES[claim]}\n\n`{command}`\n\n{body}"
            print(section, flush=True)
            pipe.record(f"table-{claim}", section)
            if not args.smoke:
                write_section(args.doc, claim, section)


if __name__ == "__main__":
    main(get_parser().parse_args())
