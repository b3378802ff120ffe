#!/usr/bin/env python3
"""
Training and decoding throughput of the plugin against fairseq's cmlm_transformer and
transformer on Multi30k de->en, with every lever measured against the row it changes
(docs/SPEED.md, "Throughput").

Models of about equal size: the plugin's diffusion_xlmr_tiny (6 x 256; full attention,
and a second one with --prompt-attention prefix), fairseq's cmlm_transformer and
transformer (3 + 3 x 256), one 8k sentencepiece vocabulary.

Training: each row runs benchmarks.train_worker in a process of its own on --threads
threads (fairseq's Trainer and train_step, as fairseq-train runs them): target tokens/s
over --train-updates updates, FLOPs per target token (every matmul and attention of one
update's forward and backward, by shape), achieved GFLOP/s against the measured fp32 and
bf16 matmul peaks, peak resident memory, and for the rows marked so a torch-profiler
breakdown of where an update's time goes.

Decoding: test_2016_flickr, BLEU (sacreBLEU) beside the latency at batch size 1 and the
sentences/s at --batch-size, with the process's peak resident memory of each row.

--quick trains nothing: checkpoints come from --checkpoint MODEL=PATH or are made at
random init (then the diffusion rows decode at the reference length and the
autoregressive ones stop at the source length, and BLEU means nothing). Without --quick
the models that have no checkpoint are trained for --train-minutes first, all at once.
Results go to --workdir/results.{md,json}.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import common
from benchmarks.measuring import build_generator, load_model, machine, matmul_peaks, measure, test_batches

REPO = common.REPO
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
# fairseq-train arguments, peak learning rate and --max-tokens of each model; the batch
# sizes give each model about 2,000 target tokens per update (the plugin's --max-tokens
# counts prompt + target, fairseq's max(source, target))
MODELS = {
    "plugin": (common.MODEL_ARGS["plugin"], 1e-3, 4096),
    "prefix": (common.MODEL_ARGS["plugin"] + ["--prompt-attention", "prefix"], 1e-3, 4096),
    "cmlm": (common.MODEL_ARGS["cmlm"], 5e-4, 2048),
    "transformer": (common.MODEL_ARGS["transformer"], 5e-4, 2048),
}
BF16 = ["--bf16-autocast"]
RESIDUAL = ["--bf16-residual"]
NO_LENGTH = ["--length-loss-factor", "0"]
STAGE_1 = "--bf16-autocast, --bf16-residual, --length-loss-factor 0"


@dataclass
class TrainRow:
    """One training measurement: ``args`` added to the model's fairseq-train arguments,
    ``variants`` benchmarks/variants.py training variants, ``env`` added to the environment."""

    name: str
    model: str
    args: list = field(default_factory=list)
    variants: tuple = ()
    env: dict = field(default_factory=dict)
    baseline: str = None
    profile: bool = False

    @property
    def bf16(self):
        return "--bf16-autocast" in self.args


def training_rows(tcmalloc):
    rows = [
        TrainRow("fp32", "cmlm", profile=True),
        TrainRow("fp32", "transformer"),
        TrainRow("fp32", "plugin"),
        TrainRow("fp32, fairseq's gelu", "plugin", variants=("fairseq-gelu",), baseline="fp32"),
        TrainRow("--bf16-autocast", "plugin", BF16, profile=True),
        TrainRow("--bf16-autocast, fairseq's gelu", "plugin", BF16, variants=("fairseq-gelu",),
                 baseline="--bf16-autocast"),
        TrainRow("--bf16-autocast, compiled layers", "plugin", BF16, variants=("compiled-layers",),
                 baseline="--bf16-autocast"),
        TrainRow("--bf16-autocast, --length-loss-factor 0", "plugin",
                 BF16 + NO_LENGTH, baseline="--bf16-autocast"),
        TrainRow("--bf16-autocast, --time-sampling single", "plugin",
                 BF16 + ["--time-sampling", "single"], baseline="--bf16-autocast"),
        TrainRow("--bf16-autocast, --bf16-residual", "plugin", BF16 + RESIDUAL,
                 baseline="--bf16-autocast"),
        TrainRow("--bf16-autocast", "prefix", BF16, profile=True),
        TrainRow("--bf16-autocast, --bf16-residual", "prefix", BF16 + RESIDUAL,
                 baseline="--bf16-autocast"),
        TrainRow("--bf16-autocast, per-row prompts", "prefix", BF16,
                 variants=("per-row-prompts",), baseline="--bf16-autocast"),
        TrainRow("--bf16-autocast, before: fairseq's gelu, per-row prompts", "prefix", BF16,
                 variants=("fairseq-gelu", "per-row-prompts"), baseline="--bf16-autocast"),
    ]
    if tcmalloc:
        preload = {"LD_PRELOAD": tcmalloc}
        rows += [
            TrainRow("fp32, tcmalloc", "cmlm", env=preload, baseline="fp32"),
            TrainRow("--bf16-autocast, tcmalloc", "plugin", BF16, env=preload,
                     baseline="--bf16-autocast"),
            TrainRow("--bf16-autocast, tcmalloc", "prefix", BF16, env=preload,
                     baseline="--bf16-autocast"),
        ]
        # the paper's stage 1 (the length predictor is trained apart) with every lever on
        rows += [TrainRow(f"{STAGE_1}, tcmalloc", model, BF16 + RESIDUAL + NO_LENGTH, env=preload,
                          baseline="--bf16-autocast") for model in ("plugin", "prefix")]
    return rows


@dataclass
class DecodeRow:
    """One decoding setting: ``options`` go to the model's generator (measuring.build_generator)."""

    name: str
    model: str
    options: dict = field(default_factory=dict)
    baseline: str = None
    bf16: bool = False


def decoding_rows():
    k4 = {"max_iter": 4, "beam_size": 1}
    exact = {**k4, "prompt_cache": True}
    k10 = {"max_iter": 10, "beam_size": 3, "prompt_cache": True}
    return [
        DecodeRow("beam 5", "transformer", {"beam": 5}),
        DecodeRow("greedy", "transformer", {"beam": 1}),
        DecodeRow("K=4, 1 length", "prefix", k4),
        DecodeRow("K=4, 1 length, --prompt-cache (exact)", "prefix", exact, "K=4, 1 length"),
        DecodeRow("K=4, 1 length, --prompt-cache (exact), bf16", "prefix", exact,
                  "K=4, 1 length, --prompt-cache (exact)", bf16=True),
        DecodeRow("K=10, 3 lengths, --prompt-cache (exact)", "prefix", k10),
        *[DecodeRow(f"K=10, 3 lengths, --prompt-cache (exact), {name}={value}", "prefix",
                    {**k10, name: value}, "K=10, 3 lengths, --prompt-cache (exact)")
          for name, values in (("finished", ("half", "drop")),
                               ("length_candidates", ("one forward", "per slot")))
          for value in values],
        DecodeRow("K=4, 1 length", "plugin", k4),
        DecodeRow("K=4, 1 length, --prompt-cache (refresh never)", "plugin",
                  {**k4, "prompt_cache": True}, "K=4, 1 length"),
        DecodeRow("K=4, 1 length, --prompt-cache-refresh 2", "plugin",
                  {**k4, "prompt_cache": True, "prompt_cache_refresh": 2}, "K=4, 1 length"),
        DecodeRow("K=4, 1 length, --prompt-cache (refresh never), bf16", "plugin",
                  {**k4, "prompt_cache": True}, "K=4, 1 length, --prompt-cache (refresh never)",
                  bf16=True),
    ]


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=None,
                        help="Multi30k raw text (default: shared/data/multi30k above the repository)")
    parser.add_argument("--workdir", type=Path, default=REPO / "work" / "bench_throughput",
                        help="binarized data, checkpoints, logs and results.{md,json}")
    parser.add_argument("--quick", action="store_true",
                        help="train nothing: --checkpoint or random-init checkpoints (<= 20 min)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH",
                        help=f"the checkpoint of MODEL ({', '.join(MODELS)}) to decode")
    parser.add_argument("--train-minutes", type=float, default=15.0,
                        help="without --quick: training time of each model that has no checkpoint")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every measurement")
    parser.add_argument("--train-updates", type=int, default=12, help="timed updates per training row")
    parser.add_argument("--train-warmup", type=int, default=3, help="untimed updates before them")
    parser.add_argument("--profile-updates", type=int, default=4,
                        help="updates the profiler records in the rows that have a profile")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of the throughput runs")
    parser.add_argument("--latency-sentences", type=int, default=50,
                        help="sentences decoded one at a time for the latency column")
    parser.add_argument("--test-lines", type=int, default=None,
                        help="decode only the first N test sentences (default: all 1,000)")
    parser.add_argument("--flop-sentences", type=int, default=64,
                        help="sentences (spread over the test set) whose FLOPs are counted")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out: train, decode")
    parser.add_argument("--smoke", action="store_true",
                        help="a check that everything runs (4 minutes here; numbers mean nothing)")
    return parser


def smoke_settings(args):
    args.quick, args.train_updates, args.train_warmup, args.profile_updates = True, 1, 1, 1
    args.latency_sentences, args.test_lines, args.flop_sentences, args.batch_size = 2, 8, 4, 8
    if args.workdir == REPO / "work" / "bench_throughput":
        args.workdir = REPO / "work" / "bench_throughput_smoke"


# ------------------------------------------------------------------- data
def prepare(args, raw, commands):
    """The binarized data of both model families (common.prepare_multi30k), once."""
    paths = {"plugin_bin": args.workdir / "data" / "plugin-bin",
             "cmlm_spm": args.workdir / "data" / "cmlm-spm",
             "cmlm_bin": args.workdir / "data" / "cmlm-bin", "workdir": args.workdir}
    if not (paths["cmlm_bin"] / "test.de-en.en.bin").is_file():
        settings = argparse.Namespace(prep_workers=2, template="{src} English:", vocab_size=8000,
                                      train_lines=2000 if args.smoke else None, test_lines=None)
        common.prepare_multi30k(settings, raw, paths, commands)
    return paths


def data_dir(paths, model):
    return paths["plugin_bin"] if model in ("plugin", "prefix") else paths["cmlm_bin"]


def train_args(paths, model, extra=(), minutes=60.0, warmup=100):
    arguments, lr, max_tokens = MODELS[model]
    return [str(data_dir(paths, model)), *arguments,
            *common.optimization_args(lr, max_tokens, warmup, minutes), *extra]


# --------------------------------------------------------------- training
def run_worker(args, paths, row):
    """One training row in its own process: its JSON line and its peak resident memory."""
    cmd = [sys.executable, "-m", "benchmarks.train_worker", "--updates", str(args.train_updates),
           "--warmup", str(args.train_warmup)]
    if row.profile:
        cmd += ["--profile", str(args.profile_updates)]
    for variant in row.variants:
        cmd += ["--variant", variant]
    cmd += ["--", *train_args(paths, row.model, [*row.args, "--no-save", "--save-dir",
                                                  str(args.workdir / "unused")])]
    env = {**common.thread_env(args.threads), **row.env}
    log_path = args.workdir / "logs" / f"train-{row.model}-{slug(row.name)}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, env=env, text=True,
                                cwd=REPO)
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"training row {row.model} / {row.name} failed; see {log_path}:\n"
                         f"{common.tail(log_path)}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024
    result["command"] = " ".join(f"{k}={v}" for k, v in row.env.items()) + (" " if row.env else "") + \
        common.command_string(cmd, args.threads)
    return result


def slug(text):
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def train_table(rows, results, peaks):
    cmlm = results.get(("cmlm", "fp32"))
    lines = ["| model | training | target tokens/s | × CMLM fp32 | vs | speed-up | MFLOP / target token "
             "| GFLOP/s | % of peak | target tokens / update | peak memory (MiB) |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        r = results[(row.model, row.name)]
        rate = r["target_tokens_per_second"]
        versus = speedup = ""
        if row.baseline:
            versus = row.baseline
            speedup = f"{rate / results[(row.model, row.baseline)]['target_tokens_per_second']:.2f}×"
        peak = peaks["bf16" if row.bf16 else "fp32"]
        lines.append(
            f"| {row.model} | {row.name} | {rate:,.0f} | "
            f"{rate / cmlm['target_tokens_per_second']:.2f}× | {versus} | {speedup} | "
            f"{r['flops_per_target_token'] / 1e6:.1f} | {r['gflops_per_second']:.1f} | "
            f"{100 * r['gflops_per_second'] / peak:.0f}% {'bf16' if row.bf16 else 'fp32'} | "
            f"{r['target_tokens_per_update']:,.0f} | {r['peak_rss_mib']:,.0f} |"
        )
    return "\n".join(lines)


def profile_table(rows, results):
    """Where an update's time goes, per profiled row: regions, then forward + backward by op
    (every op outside the data, optimizer and clip-grads regions)."""
    profiled = [r for r in rows if r.profile]
    tables = []
    for row in profiled:
        p = results[(row.model, row.name)]["profile"]
        wall = p["wall_seconds"]
        lines = [f"**{row.model}, {row.name}** ({p['updates']} updates, "
                 f"{1000 * wall / p['updates']:,.0f} ms each under the profiler)", "",
                 "| part of the update | ms / update | share |", "|---|---:|---:|"]
        for name, seconds in sorted(p["regions"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {name} | {1000 * seconds / p['updates']:,.1f} | {100 * seconds / wall:.1f}% |")
        lines += ["", "| forward + backward, by op | ms / update | share of the update |", "|---|---:|---:|"]
        for name, seconds in sorted(p["forward_backward"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {name} | {1000 * seconds / p['updates']:,.1f} | {100 * seconds / wall:.1f}% |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


# --------------------------------------------------------------- decoding
def checkpoints(args, paths, commands):
    """Each decoded model's checkpoint: given, trained before in --workdir, made at random
    init (--quick), or trained now for --train-minutes (all missing models at once)."""
    given = dict(item.split("=", 1) for item in args.checkpoint)
    unknown = set(given) - set(MODELS)
    if unknown:
        raise SystemExit(f"--checkpoint {sorted(unknown)}: models are {', '.join(MODELS)}")
    found, jobs, random_init = {}, {}, []
    for model in ("transformer", "prefix", "plugin"):
        path = Path(given[model]) if model in given else args.workdir / model / "checkpoint_last.pt"
        if model in given and not path.is_file():
            raise SystemExit(f"--checkpoint {model}={path}: no such file")
        found[model] = path
        if path.is_file():
            continue
        if args.quick:
            random_init.append(model)
            save_random_init(train_args(paths, model, BF16 if model != "transformer" else []), path)
            continue
        cmd = [common.fairseq_cli("fairseq-train"),
               *train_args(paths, model, (BF16 if model != "transformer" else []) + [
                   "--save-dir", str(path.parent), "--no-epoch-checkpoints",
                   "--validate-interval", "1000", "--save-interval", "1000", "--log-interval", "10"],
                   minutes=args.train_minutes)]
        jobs[model] = (cmd, args.workdir / model / "train.log")
        commands[f"train_{model}"] = common.command_string(cmd, args.threads)
    if jobs:
        for _, log_path in jobs.values():
            log_path.parent.mkdir(parents=True, exist_ok=True)
        common.run_trainings(argparse.Namespace(parallel=True, threads_per_model=args.threads),
                             jobs, args.train_minutes, "training")
    return found, random_init


def save_random_init(arguments, path):
    """A checkpoint of the untrained model of fairseq-train ``arguments``, as fairseq saves it."""
    from benchmarks.train_worker import build_trainer

    path.parent.mkdir(parents=True, exist_ok=True)
    trainer, _, _ = build_trainer(arguments + ["--save-dir", str(path.parent)])
    trainer.consolidate_optimizer()
    trainer.save_checkpoint(str(path), {})


def decode_all(args, paths, found, random_init, raw):
    import torch

    torch.set_num_threads(args.threads)
    references = (raw / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    rows, results, parameters = decoding_rows(), {}, {}
    for model in ("transformer", "prefix", "plugin"):
        network, task = load_model(data_dir(paths, model), found[model])
        parameters[model] = sum(p.numel() for p in network.parameters())
        batches = test_batches(args, task)
        for row in (r for r in rows if r.model == model):
            options = dict(row.options)
            if model in random_init:  # no trained length head or end of sentence
                if model == "transformer":
                    options.update(max_len_a=1.0, max_len_b=0)
                else:
                    options["oracle_length"] = True
            common.log(f"decoding: {model}, {row.name}")
            generator = build_generator(model, network, task, options)
            results[(model, row.name)] = measure(row, network, generator, batches, references,
                                                 task.target_dictionary)
    return rows, results, parameters


def decode_table(rows, results, parameters, batch_size):
    beam5 = results[("transformer", "beam 5")]
    lines = [f"| model | decoding | BLEU | ms/sentence (bs 1) | × beam-5 latency | sentences/s (bs {batch_size}) "
             f"| × beam 5 | vs | speed-up bs 1 | speed-up bs {batch_size} | ΔBLEU | peak memory (MiB) | params |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        r = results[(row.model, row.name)]
        versus = s1 = s64 = delta = ""
        if row.baseline:
            b = results[(row.model, row.baseline)]
            versus = row.baseline
            s1 = f"{b['latency_ms'] / r['latency_ms']:.2f}×"
            s64 = f"{r['sentences_per_second'] / b['sentences_per_second']:.2f}×"
            delta = f"{r['bleu'] - b['bleu']:+.2f}"
        lines.append(
            f"| {row.model} | {row.name} | {r['bleu']:.2f} | {r['latency_ms']:.1f} | "
            f"{r['latency_ms'] / beam5['latency_ms']:.2f}× | {r['sentences_per_second']:.1f} | "
            f"{r['sentences_per_second'] / beam5['sentences_per_second']:.2f}× | {versus} | {s1} | "
            f"{s64} | {delta} | {r['peak_rss_mib']:,.0f} | {parameters[row.model] / 1e6:.2f}M |"
        )
    return "\n".join(lines)


def main(args):
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    if args.smoke:
        smoke_settings(args)
    start = time.time()
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    skip = {part for part in args.skip.split(",") if part}
    if skip - {"train", "decode"}:
        raise SystemExit(f"--skip {args.skip}: the sections are train and decode")
    raw = common.find_data(args.data)
    commands = {}
    paths = prepare(args, raw, commands)
    common.log("measuring the matmul peaks")
    peaks = matmul_peaks(args.threads)
    tcmalloc = TCMALLOC if Path(TCMALLOC).exists() else None
    sections, record = [], {"matmul_peak_gflops": peaks}
    if "train" not in skip:
        rows, results = training_rows(tcmalloc), {}
        if args.smoke:  # the profiled rows, every variant and the rows they are measured against
            chosen = {(r.model, r.name) for r in rows if r.profile or r.variants}
            chosen |= {(r.model, r.baseline) for r in rows if (r.model, r.name) in chosen}
            rows = [r for r in rows if (r.model, r.name) in chosen]
        for row in rows:
            common.log(f"training: {row.model}, {row.name}")
            results[(row.model, row.name)] = run_worker(args, paths, row)
        sections += [train_table(rows, results, peaks), profile_table(rows, results)]
        record["training"] = [{"model": r.model, "training": r.name, "baseline": r.baseline,
                               **results[(r.model, r.name)]} for r in rows]
    if "decode" not in skip:
        found, random_init = checkpoints(args, paths, commands)
        rows, results, parameters = decode_all(args, paths, found, random_init, raw)
        sections.append(decode_table(rows, results, parameters, args.batch_size))
        if random_init:
            sections.append(f"Random-init checkpoints ({', '.join(random_init)}): BLEU means nothing; "
                            "diffusion rows decode at the reference length, autoregressive ones "
                            "stop at the source length.")
        record["decoding"] = [{"model": r.model, "decoding": r.name, "options": r.options,
                               "baseline": r.baseline, "bf16": r.bf16, **results[(r.model, r.name)]}
                              for r in rows]
        record["checkpoints"] = {m: str(p) for m, p in found.items()}
        record["parameters"] = parameters
    command = "python -m benchmarks.bench_throughput " + " ".join(sys.argv[1:])
    sections.append(
        f"Machine: {machine(args.threads)}. Matmul peak (2048², torch.matmul): {peaks['fp32']:.1f} "
        f"GFLOP/s fp32, {peaks['bf16']:.1f} GFLOP/s bf16. test_2016_flickr: "
        f"{args.test_lines or 1000} sentences at batch size {args.batch_size}, latency over the "
        f"first {args.latency_sentences} one at a time. Command: `{command}`"
        f"{' (smoke: numbers mean nothing)' if args.smoke else ''}."
    )
    report = "\n\n".join(sections) + "\n"
    print("\n" + report, flush=True)
    from diffusion_plugin.files import write_atomically

    write_atomically(args.workdir / "results.md", report)
    record.update(commands=commands, command=command, machine=machine(args.threads),
                  seconds=time.time() - start,
                  options={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    write_atomically(args.workdir / "results.json", json.dumps(record, indent=2) + "\n")
    common.log(f"done in {(time.time() - start) / 60:.1f} min; results in {args.workdir}/results.{{md,json}}")


if __name__ == "__main__":
    main(get_parser().parse_args())
