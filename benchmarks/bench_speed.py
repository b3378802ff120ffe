#!/usr/bin/env python3
"""Decoding and training speed of the plugin against fairseq's transformer and
cmlm_transformer on Multi30k de->en, with each lever measured against the row it changes
(docs/SPEED.md).

Models of about equal size, one 8k sentencepiece vocabulary: the plugin's
diffusion_xlmr_tiny (6 x 256; full attention, and a second one trained with
--prompt-attention prefix), fairseq's cmlm_transformer and transformer (3 + 3 x 256).
The binarized data are prepared in --workdir.

Two modes:

* ``--mode levers`` (default): every decoding optimisation of the plugin against its
  baseline row, CMLM's and the transformer's settings, MMLU 2-shot rows (long prompts,
  one-token answers decoded at their reference length, speed only), each model's
  fairseq-train target tokens/s, and the verdict: the fastest plugin setting within 1
  BLEU of its best against autoregressive beam 5.
* ``--mode throughput``: training rows, each benchmarks.train_worker in a process of
  its own on --threads threads (fairseq's Trainer and train_step): target tokens/s,
  FLOPs per target token, the share of the matmul peak, peak resident memory, and for
  the marked rows a torch-profiler breakdown of an update; then the decoding rows of the
  prompt cache and of batching finished canvases and length candidates.

Every decoding row decodes test_2016_flickr in one process on --threads threads: BLEU,
latency at batch size 1, sentences/s at --batch-size, achieved GFLOP/s (FLOPs counted
from the shapes of every matmul and attention by torch's FlopCounterMode, on a subset)
against the measured fp32 and bf16 matmul peaks, and peak resident memory. A model
without a checkpoint (--checkpoint, --workdir) is trained for --train-minutes first,
all at once; with --quick it is made at random init instead (diffusion rows then decode
at the reference length and autoregressive ones stop at the source length; BLEU means
nothing). Results go to --workdir/results.{md,json}.
"""

import argparse
import json
import logging
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import common
from benchmarks.measuring import build_generator, load_model, machine, matmul_peaks, measure, test_batches

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
DIFFUSION = ("plugin", "prefix")
BF16 = ["--bf16-autocast"]
PREFIX = ["--prompt-attention", "prefix"]
# fairseq-train arguments, peak learning rate and --max-tokens of each model's checkpoint
CHECKPOINT_TRAINING = {
    "plugin": (common.MODEL_ARGS["plugin"] + BF16 + ["--time-sampling", "single"], 1e-3, 1536),
    "prefix": (common.MODEL_ARGS["plugin"] + BF16 + ["--time-sampling", "single"] + PREFIX, 1e-3, 1536),
    "cmlm": (common.MODEL_ARGS["cmlm"], 5e-4, 4096),
    "transformer": (common.MODEL_ARGS["transformer"], 5e-4, 4096),
}
MODELS = list(CHECKPOINT_TRAINING)
# the same for the throughput rows: about 2,000 target tokens per update for each model (the
# plugin's --max-tokens counts prompt + target, fairseq's max(source, target))
THROUGHPUT_TRAINING = {
    "plugin": (common.MODEL_ARGS["plugin"], 1e-3, 4096),
    "prefix": (common.MODEL_ARGS["plugin"] + PREFIX, 1e-3, 4096),
    "cmlm": (common.MODEL_ARGS["cmlm"], 5e-4, 2048),
    "transformer": (common.MODEL_ARGS["transformer"], 5e-4, 2048),
}
# options whose default depends on --mode: (levers, throughput)
MODE_DEFAULTS = {"train_minutes": (45.0, 15.0), "latency_sentences": (100, 50), "flop_sentences": (128, 64)}
WPS_RE = re.compile(r"\bwps=([\d.]+)")


@dataclass
class Row:
    """One decoding setting: ``options`` go to the model's generator (measuring.build_generator)."""

    name: str
    model: str
    options: dict = field(default_factory=dict)
    baseline: str = None
    bf16: bool = False
    mmlu: bool = False


def lever_rows(length_beam):
    """--mode levers: every model's settings, then each optimisation against its baseline."""
    default, base = f"K=10, {length_beam} lengths", {"max_iter": 10, "beam_size": length_beam}
    k1 = {"max_iter": 1, "oracle_length": True}

    def lever(change, model="plugin", baseline=default, bf16=False, **options):
        return Row(f"{default}, {change}", model, {**base, **options}, baseline, bf16)

    rows = [Row("greedy", "transformer", {"beam": 1}), Row("beam 5", "transformer", {"beam": 5}),
            Row(default, "cmlm", base), Row(f"K=4, {length_beam} lengths", "cmlm", {**base, "max_iter": 4})]
    rows += [Row(f"K={steps}, {beam} lengths", "plugin", {"max_iter": steps, "beam_size": beam})
             for steps in (1, 2, 4, 10) for beam in (1, length_beam)]
    rows += [
        lever("lm_head_positions=all", lm_head_positions="all"),
        lever("finished=keep", finished="keep"),
        lever("length_candidates=per slot", length_candidates="per slot"),
        lever("--bf16-autocast", bf16=True),
        lever("threshold0.9", decoding_strategy="threshold0.9"),
        lever("threshold0.7", decoding_strategy="threshold0.7"),
        lever("threshold0.9, lm_head_positions=target", baseline=f"{default}, threshold0.9",
              decoding_strategy="threshold0.9", lm_head_positions="target"),
        lever("--prompt-cache (refresh never)", prompt_cache=True),
        lever("--prompt-cache-refresh 5", prompt_cache=True, prompt_cache_refresh=5),
        lever("--prompt-cache-refresh 2", prompt_cache=True, prompt_cache_refresh=2),
        Row(default, "prefix", base),
        lever("--prompt-cache (exact)", "prefix", prompt_cache=True),
    ]
    rows += [Row(f"K={steps}, {beam} lengths, --prompt-cache (exact)", "prefix",
                 {"max_iter": steps, "beam_size": beam, "prompt_cache": True})
             for steps in (1, 2, 4) for beam in (1, length_beam)]
    return rows + [
        Row("MMLU 2-shot, greedy", "transformer", {"beam": 1}, mmlu=True),
        *[Row("MMLU 2-shot, K=1", model, k1, mmlu=True) for model in DIFFUSION],
        Row("MMLU 2-shot, K=1, --prompt-cache (exact)", "prefix", {**k1, "prompt_cache": True},
            "MMLU 2-shot, K=1", mmlu=True),
    ]


def throughput_rows():
    """--mode throughput: the prompt cache, finished canvases and length candidates."""
    k4, k10 = {"max_iter": 4, "beam_size": 1}, {"max_iter": 10, "beam_size": 3, "prompt_cache": True}
    exact, refresh_never = {**k4, "prompt_cache": True}, "K=4, 1 length, --prompt-cache (refresh never)"
    return [
        Row("beam 5", "transformer", {"beam": 5}), Row("greedy", "transformer", {"beam": 1}),
        Row("K=4, 1 length", "prefix", k4),
        Row("K=4, 1 length, --prompt-cache (exact)", "prefix", exact, "K=4, 1 length"),
        Row("K=4, 1 length, --prompt-cache (exact), bf16", "prefix", exact,
            "K=4, 1 length, --prompt-cache (exact)", bf16=True),
        Row("K=10, 3 lengths, --prompt-cache (exact)", "prefix", k10),
        *[Row(f"K=10, 3 lengths, --prompt-cache (exact), {name}={value}", "prefix",
              {**k10, name: value}, "K=10, 3 lengths, --prompt-cache (exact)")
          for name, values in (("finished", ("half", "drop")), ("length_candidates", ("one forward", "per slot")))
          for value in values],
        Row("K=4, 1 length", "plugin", k4),
        Row(refresh_never, "plugin", exact, "K=4, 1 length"),
        Row("K=4, 1 length, --prompt-cache-refresh 2", "plugin", {**exact, "prompt_cache_refresh": 2},
            "K=4, 1 length"),
        Row(f"{refresh_never}, bf16", "plugin", exact, refresh_never, bf16=True),
    ]


@dataclass
class TrainRow:
    """One training measurement: ``args`` added to the model's fairseq-train arguments,
    ``variants`` benchmarks.variants training variants, ``env`` added to the environment."""

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
    """--mode throughput: each model in fp32 or bf16, then each lever against it (tcmalloc's if installed)."""

    def on_bf16(change, model, args=(), **keywords):
        return TrainRow(f"--bf16-autocast, {change}", model, [*BF16, *args], baseline="--bf16-autocast", **keywords)

    rows = [
        TrainRow("fp32", "cmlm", profile=True), TrainRow("fp32", "transformer"), TrainRow("fp32", "plugin"),
        TrainRow("fp32, fairseq's gelu", "plugin", variants=("fairseq-gelu",), baseline="fp32"),
        TrainRow("--bf16-autocast", "plugin", BF16, profile=True),
        on_bf16("fairseq's gelu", "plugin", variants=("fairseq-gelu",)),
        on_bf16("compiled layers", "plugin", variants=("compiled-layers",)),
        on_bf16("--length-loss-factor 0", "plugin", ["--length-loss-factor", "0"]),
        on_bf16("--time-sampling single", "plugin", ["--time-sampling", "single"]),
        on_bf16("--bf16-residual", "plugin", ["--bf16-residual"]),
        TrainRow("--bf16-autocast", "prefix", BF16, profile=True),
        on_bf16("--bf16-residual", "prefix", ["--bf16-residual"]),
        on_bf16("per-row prompts", "prefix", variants=("per-row-prompts",)),
        on_bf16("before: fairseq's gelu, per-row prompts", "prefix", variants=("fairseq-gelu", "per-row-prompts")),
    ]
    if tcmalloc:
        preload = {"LD_PRELOAD": tcmalloc}
        rows += [TrainRow("fp32, tcmalloc", "cmlm", env=preload, baseline="fp32"),
                 *[on_bf16("tcmalloc", model, env=preload) for model in DIFFUSION]]
        # the paper's stage 1 (the length predictor is trained apart) with every lever on
        rows += [on_bf16("--bf16-residual, --length-loss-factor 0, tcmalloc", model,
                         ["--bf16-residual", "--length-loss-factor", "0"], env=preload) for model in DIFFUSION]
    return rows


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    by_mode = {dest: f"(default: {levers:g} in --mode levers, {throughput:g} in --mode throughput)"
               for dest, (levers, throughput) in MODE_DEFAULTS.items()}
    add("--mode", choices=("levers", "throughput"), default="levers", help="which rows are measured (see above)")
    add("--data", type=Path, help="Multi30k raw text (default: shared/data/multi30k above the repository)")
    add("--mmlu", type=Path, help="--mode levers: MMLU 2-shot JSON lines directory "
        "(default: shared/data/instruct/mmlu/2-shot/val above the repository)")
    add("--workdir", type=Path, help="data prepared here, models trained here, logs and results.{md,json} "
        "(default: work/bench_speed or work/bench_throughput, by --mode)")
    add("--checkpoint", action="append", default=[], metavar="MODEL=PATH",
        help=f"use this checkpoint for MODEL ({', '.join(MODELS)})")
    add("--quick", action="store_true", help="train nothing: --checkpoint, found or random-init checkpoints")
    add("--train-minutes", type=float, help="training budget of each model that has no checkpoint yet "
        + by_mode["train_minutes"])
    add("--warmup-updates", type=int, default=300, help="inverse-sqrt warm-up of the models trained here")
    add("--train-max-update", type=int, help="also stop the training of missing models after N updates")
    add("--prefix-from-plugin", action="store_true",
        help="fine-tune the prefix-attention model from the plugin's checkpoint instead of training it from scratch")
    add("--max-len-b", type=int, default=200, help="longest autoregressive output (fairseq-generate's --max-len-b)")
    add("--threads", type=int, default=1, help="torch threads of every measurement")
    add("--length-beam", type=int, default=3, help="--mode levers: length candidates of the diffusion rows")
    add("--batch-size", type=int, default=64, help="batch size of the throughput runs")
    add("--models", default=",".join(MODELS), help="comma-separated models whose decoding rows are measured "
        "(the verdict needs transformer and plugin or prefix)")
    add("--latency-sentences", type=int, help="sentences decoded one at a time for the latency column "
        + by_mode["latency_sentences"])
    add("--test-lines", type=int, help="decode only the first N test sentences (default: all 1,000)")
    add("--flop-sentences", type=int, help="sentences (spread over the test set) whose FLOPs are counted "
        + by_mode["flop_sentences"])
    add("--mmlu-examples", type=int, default=256, help="--mode levers: MMLU examples, spread over the subjects")
    add("--train-speed-updates", type=int, default=50, help="--mode levers: updates of the fairseq-train tokens/s run")
    add("--train-updates", type=int, default=12, help="--mode throughput: timed updates per training row")
    add("--train-warmup", type=int, default=3, help="--mode throughput: untimed updates before them")
    add("--profile-updates", type=int, default=4, help="--mode throughput: updates recorded in the profiled rows")
    add("--skip", default="", help="--mode throughput: comma-separated sections to leave out: train, decode")
    add("--smoke", action="store_true", help="a check that everything runs (numbers mean nothing)")
    return parser


def settle(args):
    """Defaults that depend on --mode, and the overrides of --smoke."""
    levers = args.mode == "levers"
    for dest, (levers_default, throughput_default) in MODE_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, levers_default if levers else throughput_default)
    name = "bench_speed" if levers else "bench_throughput"
    if args.smoke:
        args.train_minutes, args.warmup_updates, args.train_max_update = 0.2, 10, 3
        args.prefix_from_plugin, args.max_len_b, args.quick = True, 10, not levers
        args.latency_sentences, args.test_lines, args.flop_sentences = 2, 8, 4
        args.batch_size, args.mmlu_examples, args.train_speed_updates = 8, 4, 3
        args.train_updates, args.train_warmup, args.profile_updates = 1, 1, 1
        name += "_smoke"
    args.workdir = (args.workdir or common.REPO / "work" / name).resolve()


# --------------------------------------------------------------------- data
def prepare(args, runner, raw):
    """{model: its binarized data}: the plugin's (plugin-bin) or fairseq's (cmlm-bin), in --workdir."""
    data = args.workdir / "data"
    if not (data / "cmlm-bin" / "test.de-en.en.bin").is_file():
        with tempfile.TemporaryDirectory() as sliced:
            limits = {"train": 2000 if args.smoke else None, "val": None, "test_2016_flickr": None}
            common.slice_corpus(raw, Path(sliced), limits)
            common.prepare_translation(runner, Path(sliced), data / "plugin-bin", data / "cmlm-spm",
                                       data / "cmlm-bin", "{src} English:", 8000, workers=2)
    return {model: data / ("plugin-bin" if model in DIFFUSION else "cmlm-bin") for model in MODELS}


def train_args(paths, model, settings, extra=(), minutes=60.0, warmup=100):
    arguments, lr, max_tokens = settings[model]
    return [str(paths[model]), *arguments,
            *common.optimization_args(lr, max_tokens, warmup, minutes), *extra]


# --------------------------------------------------------------- checkpoints
def previous_training_minutes(extra):
    """Training minutes already in the checkpoint --finetune-from-model starts from (in
    ``extra``): fairseq restores them, and --stop-time-hours counts them."""
    if "--finetune-from-model" not in extra:
        return 0.0
    from fairseq import checkpoint_utils

    import diffusion_plugin  # noqa: F401  (allows the globals of fairseq checkpoints)

    state = checkpoint_utils.load_checkpoint_to_cpu(extra[extra.index("--finetune-from-model") + 1])
    return state.get("extra_state", {}).get("previous_training_time", 0.0) / 60


def save_random_init(arguments, path):
    """A checkpoint of the untrained model of fairseq-train ``arguments``, as fairseq saves it."""
    from benchmarks.train_worker import build_trainer

    path.parent.mkdir(parents=True, exist_ok=True)
    trainer, _, _ = build_trainer(arguments + ["--save-dir", str(path.parent)])
    trainer.consolidate_optimizer()
    trainer.save_checkpoint(str(path), {})


def checkpoints(args, runner, paths, models, commands):
    """Each model's checkpoint: given, found in --workdir, made at random init (--quick), or
    trained now for --train-minutes (as many at once as the machine has cores for their
    threads: the budget is wall-clock time). ({model: path}, the models at random init)."""
    given = dict(item.split("=", 1) for item in args.checkpoint)
    if set(given) - set(MODELS):
        raise SystemExit(f"--checkpoint {sorted(set(given) - set(MODELS))}: models are {', '.join(MODELS)}")
    found, jobs, random_init = {}, {}, []

    def locate(model):
        """The given checkpoint, else the one in --workdir (found, or where it is to be made)."""
        path = Path(given.get(model, args.workdir / model / "checkpoints" / "checkpoint_last.pt"))
        if model in given and not path.is_file():
            raise SystemExit(f"--checkpoint {model}={given[model]}: no such file")
        return path

    if "prefix" in models and args.prefix_from_plugin and "plugin" not in models:
        models = [*models, "plugin"]  # the prefix model starts from it
    for model in models:
        found[model] = locate(model)
        if found[model].is_file():
            continue
        if args.quick:
            random_init.append(model)
            save_random_init(train_args(paths, model, CHECKPOINT_TRAINING), found[model])
            continue
        extra = ["--save-dir", str(found[model].parent), "--no-epoch-checkpoints",
                 "--validate-interval", "1000", "--save-interval", "1000", "--log-interval", "10"]
        if args.train_max_update:
            extra += ["--max-update", str(args.train_max_update)]
        if model == "prefix" and args.prefix_from_plugin:
            extra += ["--finetune-from-model", str(locate("plugin"))]
        jobs[model] = extra
    # the others first, then a prefix model that starts from the plugin's checkpoint
    later = {"prefix"} if "prefix" in jobs and args.prefix_from_plugin else set()
    for batch in ([m for m in jobs if m not in later], sorted(later)):
        runs = runner.run_together({f"train_{model}": [
            common.fairseq_cli("fairseq-train"), *train_args(
                paths, model, CHECKPOINT_TRAINING, jobs[model],
                args.train_minutes + previous_training_minutes(jobs[model]), args.warmup_updates)]
            for model in batch})
        commands.update({name: run["command"] for name, run in runs.items()})
    return found, random_init


# ------------------------------------------------------------------ training
def run_worker(args, runner, paths, row):
    """One training row in its own process (benchmarks.train_worker): its JSON line, its
    peak resident memory and its command."""
    cmd = [sys.executable, "-m", "benchmarks.train_worker", "--updates", str(args.train_updates),
           "--warmup", str(args.train_warmup), *(["--profile", str(args.profile_updates)] if row.profile else []),
           *[arg for variant in row.variants for arg in ("--variant", variant)],
           "--", *train_args(paths, row.model, THROUGHPUT_TRAINING,
                             [*row.args, "--no-save", "--save-dir", str(args.workdir / "unused")])]
    name = "train-" + "".join(c if c.isalnum() else "-" for c in f"{row.model}-{row.name}").strip("-")
    run = runner.run(name, cmd, env=row.env)
    result = json.loads([line for line in runner.output(name).splitlines() if line.startswith("{")][-1])
    return {**result, "peak_rss_mib": run["peak_rss_mib"], "command": run["command"]}


def train_table(rows, results, peaks):
    cmlm = results.get(("cmlm", "fp32"))
    cells = []
    for row in rows:
        r = results[(row.model, row.name)]
        rate, precision = r["target_tokens_per_second"], "bf16" if row.bf16 else "fp32"
        baseline_rate = results[(row.model, row.baseline)]["target_tokens_per_second"] if row.baseline else None
        cells.append([
            row.model, row.name, f"{rate:,.0f}", f"{rate / cmlm['target_tokens_per_second']:.2f}×",
            row.baseline or "", f"{rate / baseline_rate:.2f}×" if row.baseline else "",
            f"{r['flops_per_target_token'] / 1e6:.1f}", f"{r['gflops_per_second']:.1f}",
            f"{100 * r['gflops_per_second'] / peaks[precision]:.0f}% {precision}",
            f"{r['target_tokens_per_update']:,.0f}", f"{r['peak_rss_mib']:,.0f}",
        ])
    return common.table(["model", "training", "target tokens/s", "× CMLM fp32", "vs", "speed-up",
                         "MFLOP / target token", "GFLOP/s", "% of peak", "target tokens / update",
                         "peak memory (MiB)"], cells, align="llrrlrrrrrr")


def profile_table(rows, results):
    """Where an update's time goes, per profiled row: regions, then forward + backward by op
    (every op outside the data, optimizer and clip-grads regions)."""
    tables = []
    for row in (r for r in rows if r.profile):
        p = results[(row.model, row.name)]["profile"]
        wall, updates = p["wall_seconds"], p["updates"]

        def cells(seconds_by_name):
            return [[name, f"{1000 * seconds / updates:,.1f}", f"{100 * seconds / wall:.1f}%"]
                    for name, seconds in sorted(seconds_by_name.items(), key=lambda kv: -kv[1])]

        tables.append("\n\n".join([
            f"**{row.model}, {row.name}** ({updates} updates, {1000 * wall / updates:,.0f} ms "
            "each under the profiler)",
            common.table(["part of the update", "ms / update", "share"], cells(p["regions"]), align="lrr"),
            common.table(["forward + backward, by op", "ms / update", "share of the update"],
                         cells(p["forward_backward"]), align="lrr"),
        ]))
    return "\n\n".join(tables)


def training_speed(args, runner, paths, key):
    """--mode levers: target tokens/s of fairseq-train for ``key`` (a model, or plugin_fp32: the
    plugin without --bf16-autocast), the mean wps of its updates after the first quarter."""
    name, model = f"train_speed_{key}", key.removesuffix("_fp32")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [common.fairseq_cli("fairseq-train"), *train_args(
            paths, model, CHECKPOINT_TRAINING, ["--save-dir", tmp, "--max-update", str(args.train_speed_updates),
                                                "--no-save", "--disable-validation", "--log-interval", "1"],
            warmup=args.warmup_updates)]
        if key != model:
            cmd.remove("--bf16-autocast")
        run = runner.run(name, cmd)
    rates = [float(r) for line in runner.output(name).splitlines()
             if "train_inner" in line for r in WPS_RE.findall(line)]
    if not rates:
        raise SystemExit(f"{name}: no wps logged; raise --train-speed-updates")
    rates = rates[len(rates) // 4:]
    return sum(rates) / len(rates), run["command"]


# ------------------------------------------------------------------ decoding
def mmlu_batches(args, paths, model_name, task):
    """MMLU prompts cut from the left to fit the model, one-token-ish answers as targets."""
    import sentencepiece as spm
    import torch
    from fairseq.data import data_utils

    files = sorted(args.mmlu.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"{args.mmlu}: no *.jsonl files; pass --mmlu DIR of MMLU JSON lines")
    examples = [json.loads(line) for path in files for line in path.read_text().splitlines() if line]
    examples = examples[::max(1, len(examples) // args.mmlu_examples)][: args.mmlu_examples]
    sp = spm.SentencePieceProcessor(model_file=str(paths["plugin"] / "sentencepiece.bpe.model"))
    dictionary, room = task.source_dictionary, 255  # every model here holds 256 positions
    bos, eos, pad = torch.tensor([dictionary.bos()]), torch.tensor([dictionary.eos()]), dictionary.pad()

    def encode(text):
        pieces = " ".join(sp.encode(text.strip(), out_type=str))
        return dictionary.encode_line(pieces, add_if_not_exist=False, append_eos=False).long()

    samples = []
    for example in examples:
        answer = encode(example["targets"])
        prompt = encode(example["inputs"])[-(room - len(answer) - 2):]
        source = torch.cat([bos, prompt] if model_name in DIFFUSION else [prompt, eos])
        samples.append((source, torch.cat([answer, eos])))

    def batch(items, start):
        sources, targets = zip(*items)
        return {"id": torch.arange(start, start + len(items)), "nsentences": len(items),
                "net_input": {"src_tokens": data_utils.collate_tokens(sources, pad),
                              "src_lengths": torch.tensor([len(s) for s in sources])},
                "target": data_utils.collate_tokens(targets, pad)}

    latency = [batch([s], i) for i, s in enumerate(samples[: args.latency_sentences])]
    throughput = [batch(samples[i:i + args.batch_size], i) for i in range(0, len(samples), args.batch_size)]
    return latency, throughput, throughput[:1], max(len(t) for _, t in samples) - 1


def decode_all(args, paths, rows, found, random_init, raw):
    """Every decoding row measured; ({(model, row name): numbers}, {model: parameters})."""
    references = (raw / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    results, parameters = {}, {}
    for model in dict.fromkeys(row.model for row in rows):
        network, task = load_model(paths[model], found[model])
        parameters[model] = sum(p.numel() for p in network.parameters())
        translation = (test_batches(args, task), references, task.target_dictionary)
        if any(r.mmlu and r.model == model for r in rows):
            mmlu = mmlu_batches(args, paths, model, task)
        for row in (r for r in rows if r.model == model):
            common.log(f"decoding: {model}, {row.name}")
            options = dict(row.options)
            if model in random_init:  # no trained length head or end of sentence
                untrained = {"max_len_a": 1.0, "max_len_b": 0} if model == "transformer" else {"oracle_length": True}
                options.update(untrained)
            if row.mmlu and model == "transformer":
                options["max_len_b"] = mmlu[3]
            generator = build_generator(model, network, task, options, args.max_len_b)
            inputs = (mmlu[:3], None, None) if row.mmlu else translation  # MMLU rows: speed only
            results[(model, row.name)] = measure(row, network, generator, *inputs)
    return results, parameters


def decode_table(rows, results, parameters, training, peaks, batch_size):
    beam5 = results.get(("transformer", "beam 5"))
    cells = []
    for row in rows:
        r = results[(row.model, row.name)]
        versus = s1 = s64 = delta = ""
        if row.baseline is not None:
            b = results[(row.model, row.baseline)]
            versus, s1 = row.baseline, f"{b['latency_ms'] / r['latency_ms']:.2f}×"
            s64 = f"{r['sentences_per_second'] / b['sentences_per_second']:.2f}×"
            delta = f"{r['bleu'] - b['bleu']:+.2f}" if "bleu" in r else "–"
        gflops, against_beam5 = r["gflops_per_second"], beam5 and not row.mmlu
        cells.append([
            row.model, row.name, f"{r['bleu']:.2f}" if "bleu" in r else "–", f"{r['latency_ms']:.1f}",
            f"{r['latency_ms'] / beam5['latency_ms']:.2f}×" if against_beam5 else "–",
            f"{r['sentences_per_second']:.1f}",
            f"{r['sentences_per_second'] / beam5['sentences_per_second']:.2f}×" if against_beam5 else "–",
            f"{gflops:.2f}", f"{100 * gflops / peaks['fp32']:.1f}", f"{100 * gflops / peaks['bf16']:.1f}",
            versus, s1, s64, delta, f"{r['peak_rss_mib']:,.0f}", f"{parameters[row.model] / 1e6:.2f}M",
            f"{training[row.model]:,.0f}" if row.model in training else "–",
        ])
    return common.table(
        ["model", "decoding", "BLEU", "ms/sentence (bs 1)", "× beam-5 latency",
         f"sentences/s (bs {batch_size})", "× beam 5", "GFLOP/s", "% fp32 peak", "% bf16 peak", "vs",
         "speed-up bs 1", f"speed-up bs {batch_size}", "ΔBLEU", "peak memory (MiB)", "params",
         "train tokens/s"], cells, align="llrrrrrrrrlrrrrrr")


def verdict(rows, results):
    """The fastest plugin setting within 1 BLEU of its best, against autoregressive beam 5."""
    plugin = [r for r in rows if r.model in DIFFUSION and not r.mmlu]
    if not plugin or ("transformer", "beam 5") not in results:
        return ""
    best = max(plugin, key=lambda r: results[(r.model, r.name)]["bleu"])
    best_bleu = results[(best.model, best.name)]["bleu"]
    close = [r for r in plugin if results[(r.model, r.name)]["bleu"] >= best_bleu - 1.0]
    fastest = min(close, key=lambda r: results[(r.model, r.name)]["latency_ms"])
    chosen = results[(fastest.model, fastest.name)]
    beam5, greedy = results[("transformer", "beam 5")], results[("transformer", "greedy")]
    return (
        f"Plugin's best BLEU: {best_bleu:.2f} ({best.model}, {best.name}). Fastest plugin setting "
        f"within 1 BLEU of it at batch size 1: {fastest.model}, {fastest.name}: "
        f"{chosen['latency_ms']:.1f} ms/sentence, BLEU {chosen['bleu']:.2f}; autoregressive beam 5: "
        f"{beam5['latency_ms']:.1f} ms/sentence, BLEU {beam5['bleu']:.2f} -> "
        f"{beam5['latency_ms'] / chosen['latency_ms']:.2f}× lower latency, "
        f"{chosen['bleu'] - beam5['bleu']:+.2f} BLEU vs beam 5 "
        f"({chosen['bleu'] - greedy['bleu']:+.2f} vs greedy)."
    )


def main(args):
    import torch
    from fairseq import utils

    from diffusion_plugin.tools.files import write_atomically

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    settle(args)
    start = time.time()
    skip = {part for part in args.skip.split(",") if part}
    if skip - {"train", "decode"}:
        raise SystemExit(f"--skip {args.skip}: the sections are train and decode")
    measured = args.models.split(",")
    if set(measured) - set(MODELS):
        raise SystemExit(f"--models {sorted(set(measured) - set(MODELS))}: models are {', '.join(MODELS)}")
    raw = common.find_data(args.data)
    runner = common.Runner(args.workdir, args.threads)
    levers = args.mode == "levers"
    if levers:
        args.mmlu = common.find_shared(args.mmlu, ["instruct", "mmlu", "2-shot", "val"], flag="--mmlu")
    commands, paths = {}, prepare(args, runner, raw)
    torch.set_num_threads(args.threads)
    common.log("measuring the matmul peaks")
    peaks = matmul_peaks(args.threads)
    utils.import_user_module(argparse.Namespace(user_dir=str(common.USER_DIR)))
    sections, record = [], {"matmul_peak_gflops": peaks}
    if not levers and "train" not in skip:
        rows = training_rows(TCMALLOC if Path(TCMALLOC).exists() else None)
        if args.smoke:  # the profiled rows, every variant and the rows they are measured against
            chosen = {(r.model, r.name) for r in rows if r.profile or r.variants}
            chosen |= {(r.model, r.baseline) for r in rows if (r.model, r.name) in chosen}
            rows = [r for r in rows if (r.model, r.name) in chosen]
        results = {(row.model, row.name): run_worker(args, runner, paths, row) for row in rows}
        sections += [train_table(rows, results, peaks), profile_table(rows, results)]
        record["training"] = [{"model": r.model, "training": r.name, "baseline": r.baseline,
                               **results[(r.model, r.name)]} for r in rows]
    if "decode" not in skip:
        rows = lever_rows(args.length_beam) if levers else throughput_rows()
        rows = [row for row in rows if row.model in measured]
        models = list(dict.fromkeys(row.model for row in rows))
        found, random_init = checkpoints(args, runner, paths, models, commands)
        results, parameters = decode_all(args, paths, rows, found, random_init, raw)
        training = {}
        if levers:  # fairseq-train's target tokens/s of each model, and of the plugin's in fp32
            for key in models + (["plugin_fp32"] if "plugin" in models else []):
                training[key], commands[f"train_speed_{key}"] = training_speed(args, runner, paths, key)
        sections += [decode_table(rows, results, parameters, training, peaks, args.batch_size),
                     verdict(rows, results) if levers else ""]
        if "plugin_fp32" in training:
            sections.append(f"CPU bf16 training: the plugin's fairseq-train makes {training['plugin']:,.0f} "
                            f"target tokens/s with --bf16-autocast and {training['plugin_fp32']:,.0f} in "
                            f"fp32 ({training['plugin'] / training['plugin_fp32']:.2f}x).")
        if random_init:
            sections.append(f"Random-init checkpoints ({', '.join(random_init)}): BLEU means nothing; "
                            "diffusion rows decode at the reference length, autoregressive ones "
                            "stop at the source length.")
        record.update(decoding=[{"model": r.model, "decoding": r.name, "options": r.options,
                                 "baseline": r.baseline, "bf16": r.bf16, **results[(r.model, r.name)]}
                                for r in rows],
                      checkpoints={m: str(p) for m, p in found.items()}, parameters=parameters,
                      training_target_tokens_per_second=training)
    command = "python -m benchmarks.bench_speed " + " ".join(sys.argv[1:])
    mmlu = f"; MMLU 2-shot: {args.mmlu_examples} examples, prompts cut to the models' 256 positions" if levers else ""
    sections.append(
        f"Machine: {machine(args.threads)}. Matmul peak (2048², torch.matmul): {peaks['fp32']:.1f} "
        f"GFLOP/s fp32, {peaks['bf16']:.1f} GFLOP/s bf16. test_2016_flickr: "
        f"{args.test_lines or 1000} sentences at batch size {args.batch_size}, latency over the "
        f"first {args.latency_sentences} one at a time{mmlu}. Command: `{command}`"
        f"{' (smoke: numbers mean nothing)' if args.smoke else ''}."
    )
    report = "\n\n".join(section for section in sections if section) + "\n"
    print("\n" + report, flush=True)
    write_atomically(args.workdir / "results.md", report)
    record.update(commands=commands, command=command, machine=machine(args.threads), seconds=time.time() - start,
                  options={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    write_atomically(args.workdir / "results.json", json.dumps(record, indent=2) + "\n")
    common.log(f"done in {(time.time() - start) / 60:.1f} min; results in {args.workdir}/results.{{md,json}}")


if __name__ == "__main__":
    main(get_parser().parse_args())
