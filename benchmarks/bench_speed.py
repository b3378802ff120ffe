#!/usr/bin/env python3
"""
Decoding and training speed of the plugin against fairseq's transformer and
cmlm_transformer on Multi30k de->en, with each decoding optimisation measured.

Models of about equal size (~7-8M parameters, one 8k sentencepiece vocabulary):
the plugin's diffusion_xlmr_tiny (full attention, and a second one trained with
--prompt-attention prefix), fairseq's cmlm_transformer and transformer (3 + 3
layers x 256). The plugin and CMLM checkpoints and the binarized data come from
benchmarks/bench_vs_cmlm.py's work directory (--from-workdir); models not found
there are trained here for --train-minutes. In one process and on --threads
threads, every row of the table decodes test_2016_flickr and reports BLEU,
latency per sentence at batch size 1, sentences/s at batch size --batch-size and
achieved GFLOP/s (FLOPs counted from the shapes of every matmul and attention by
torch's FlopCounterMode, on a subset) against the measured fp32 and bf16 matmul
peaks; training target tokens/s come from a short fairseq-train run per model.
An MMLU 2-shot block (long prompts, one-token answers decoded at their reference
length) measures speed only. Results go to --workdir/results.{md,json}.
"""

import argparse
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import common
from benchmarks.measuring import build_generator, load_model, machine, matmul_peaks, measure, test_batches

REPO = common.REPO
MODELS = {
    "plugin": "diffusion_xlmr_tiny (plugin, full attention)",
    "prefix": "diffusion_xlmr_tiny (plugin, --prompt-attention prefix)",
    "cmlm": "cmlm_transformer (fairseq)",
    "transformer": "transformer (fairseq, autoregressive)",
}
# fairseq-train arguments, peak learning rate and tokens per batch of each model
TRAINING = {
    "plugin": (common.MODEL_ARGS["plugin"] + ["--bf16-autocast", "--time-sampling", "single"], 1e-3, 1536),
    "prefix": (
        common.MODEL_ARGS["plugin"]
        + ["--bf16-autocast", "--time-sampling", "single", "--prompt-attention", "prefix"],
        1e-3,
        1536,
    ),
    "cmlm": (common.MODEL_ARGS["cmlm"], 5e-4, 4096),
    "transformer": (common.MODEL_ARGS["transformer"], 5e-4, 4096),
}
WPS_RE = re.compile(r"\bwps=([\d.]+)")


@dataclass
class Row:
    """One decoding setting: ``options`` go to the model's generator."""

    name: str
    model: str
    options: dict = field(default_factory=dict)
    baseline: str = None
    bf16: bool = False
    mmlu: bool = False


def translation_rows(length_beam):
    """The table's rows: every model's settings, then each optimisation against its baseline."""
    default = f"K=10, {length_beam} lengths"
    rows = [
        Row("greedy", "transformer", {"beam": 1}),
        Row("beam 5", "transformer", {"beam": 5}),
        Row(default, "cmlm", {"max_iter": 10, "beam_size": length_beam}),
        Row(f"K=4, {length_beam} lengths", "cmlm", {"max_iter": 4, "beam_size": length_beam}),
    ]
    for steps in (1, 2, 4, 10):
        for beam in (1, length_beam):
            rows.append(Row(f"K={steps}, {beam} lengths", "plugin", {"max_iter": steps, "beam_size": beam}))
    base = {"max_iter": 10, "beam_size": length_beam}
    threshold = {**base, "decoding_strategy": "threshold0.9"}
    rows += [
        Row(f"{default}, lm_head_positions=all", "plugin", {**base, "lm_head_positions": "all"}, default),
        Row(f"{default}, finished=keep", "plugin", {**base, "finished": "keep"}, default),
        Row(f"{default}, length_candidates=per slot", "plugin",
            {**base, "length_candidates": "per slot"}, default),
        Row(f"{default}, --bf16-autocast", "plugin", base, default, bf16=True),
        Row(f"{default}, threshold0.9", "plugin", threshold, default),
        Row(f"{default}, threshold0.7", "plugin", {**base, "decoding_strategy": "threshold0.7"}, default),
        Row(f"{default}, threshold0.9, lm_head_positions=target", "plugin",
            {**threshold, "lm_head_positions": "target"}, f"{default}, threshold0.9"),
        Row(f"{default}, --prompt-cache (refresh never)", "plugin", {**base, "prompt_cache": True}, default),
        Row(f"{default}, --prompt-cache-refresh 5", "plugin",
            {**base, "prompt_cache": True, "prompt_cache_refresh": 5}, default),
        Row(f"{default}, --prompt-cache-refresh 2", "plugin",
            {**base, "prompt_cache": True, "prompt_cache_refresh": 2}, default),
        Row(default, "prefix", base),
        Row(f"{default}, --prompt-cache (exact)", "prefix", {**base, "prompt_cache": True}, default),
    ]
    for steps in (1, 2, 4):
        for beam in (1, length_beam):
            rows.append(Row(f"K={steps}, {beam} lengths, --prompt-cache (exact)", "prefix",
                            {"max_iter": steps, "beam_size": beam, "prompt_cache": True}))
    return rows


MMLU_ROWS = [
    Row("MMLU 2-shot, greedy", "transformer", {"beam": 1}, mmlu=True),
    Row("MMLU 2-shot, K=1", "plugin", {"max_iter": 1, "oracle_length": True}, mmlu=True),
    Row("MMLU 2-shot, K=1", "prefix", {"max_iter": 1, "oracle_length": True}, mmlu=True),
    Row("MMLU 2-shot, K=1, --prompt-cache (exact)", "prefix",
        {"max_iter": 1, "oracle_length": True, "prompt_cache": True}, "MMLU 2-shot, K=1", mmlu=True),
]


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=None,
                        help="Multi30k raw text (default: shared/data/multi30k above the repository)")
    parser.add_argument("--mmlu", type=Path, default=None,
                        help="MMLU 2-shot JSON lines directory (default: "
                             "shared/data/instruct/mmlu/2-shot/val above the repository)")
    parser.add_argument("--from-workdir", type=Path, default=REPO / "work" / "bench_vs_cmlm",
                        help="bench_vs_cmlm.py's work directory: data/{plugin-bin,cmlm-bin} and "
                             "{plugin,cmlm}/checkpoints/checkpoint_last.pt")
    parser.add_argument("--workdir", type=Path, default=REPO / "work" / "bench_speed",
                        help="where models trained here, logs and results.{md,json} go")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH",
                        help=f"use this checkpoint for MODEL ({', '.join(MODELS)}) instead of "
                             "the one in --from-workdir / --workdir")
    parser.add_argument("--train-minutes", type=float, default=45.0,
                        help="training budget of each model that has no checkpoint yet")
    parser.add_argument("--warmup-updates", type=int, default=300,
                        help="inverse-sqrt warm-up of the models trained here")
    parser.add_argument("--train-max-update", type=int, default=None,
                        help="also stop the training of missing models after N updates")
    parser.add_argument("--prefix-from-plugin", action="store_true",
                        help="fine-tune the prefix-attention model from the plugin's checkpoint "
                             "instead of training it from scratch")
    parser.add_argument("--max-len-b", type=int, default=200,
                        help="longest autoregressive output (fairseq-generate's --max-len-b)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every measurement")
    parser.add_argument("--length-beam", type=int, default=3,
                        help="length candidates of the diffusion rows (CMLM's and the plugin's)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of the throughput runs")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated models whose rows are measured (the verdict needs "
                             "transformer and plugin or prefix)")
    parser.add_argument("--latency-sentences", type=int, default=100,
                        help="sentences decoded one at a time for the latency column")
    parser.add_argument("--test-lines", type=int, default=None,
                        help="decode only the first N test sentences (default: all 1,000)")
    parser.add_argument("--flop-sentences", type=int, default=128,
                        help="sentences (spread over the test set) whose FLOPs are counted")
    parser.add_argument("--mmlu-examples", type=int, default=256,
                        help="MMLU examples (spread over the subjects) of the speed rows")
    parser.add_argument("--train-speed-updates", type=int, default=50,
                        help="updates of the short fairseq-train run that measures tokens/s")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny budget for a check that everything runs (< 3 min)")
    return parser


def smoke_settings(args):
    """Overrides of --smoke; numbers from it mean nothing."""
    args.train_minutes, args.warmup_updates, args.train_max_update = 0.2, 10, 3
    args.prefix_from_plugin, args.max_len_b = True, 10
    args.latency_sentences, args.test_lines, args.flop_sentences = 2, 8, 4
    args.batch_size, args.mmlu_examples, args.train_speed_updates = 8, 4, 3
    if args.workdir == REPO / "work" / "bench_speed":
        args.workdir = REPO / "work" / "bench_speed_smoke"


def find_shared(path, *parts):
    """``path``, else the first shared/data/<parts> in a parent directory of the repository."""
    candidates = [path] if path is not None else [p.joinpath("shared", "data", *parts) for p in REPO.parents]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise SystemExit(f"{'/'.join(parts)} not found (looked in {', '.join(map(str, candidates))})")


# ---------------------------------------------------------------- training
def data_dir(args, model):
    return args.from_workdir / "data" / ("plugin-bin" if model in ("plugin", "prefix") else "cmlm-bin")


def train_command(args, model, save_dir, minutes, extra):
    model_args, lr, max_tokens = TRAINING[model]
    return [
        common.fairseq_cli("fairseq-train"), str(data_dir(args, model)), *model_args,
        *common.optimization_args(lr, max_tokens, args.warmup_updates, minutes),
        "--save-dir", str(save_dir), *extra,
    ]


def previous_training_minutes(extra):
    """Training minutes already in the checkpoint --finetune-from-model starts from (in
    ``extra``): fairseq restores them, and --stop-time-hours counts them."""
    if "--finetune-from-model" not in extra:
        return 0.0
    from fairseq import checkpoint_utils

    import diffusion_plugin  # noqa: F401  (allows the globals of fairseq checkpoints)

    path = extra[extra.index("--finetune-from-model") + 1]
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    return state.get("extra_state", {}).get("previous_training_time", 0.0) / 60


def checkpoints(args, commands):
    """Each model's checkpoint: given, found, or trained now (in parallel) for --train-minutes."""
    given = dict(item.split("=", 1) for item in args.checkpoint)
    unknown = set(given) - set(MODELS)
    if unknown:
        raise SystemExit(f"--checkpoint {sorted(unknown)}: models are {', '.join(MODELS)}")
    found, jobs = {}, {}
    for model in MODELS:
        if model in given:
            found[model] = Path(given[model])
            if not found[model].is_file():
                raise SystemExit(f"--checkpoint {model}={found[model]}: no such file")
            continue
        for root in (args.from_workdir, args.workdir):
            path = root / model / "checkpoints" / "checkpoint_last.pt"
            if path.is_file():
                found[model] = path
                break
        else:
            save_dir = args.workdir / model / "checkpoints"
            extra = ["--no-epoch-checkpoints", "--validate-interval", "1000",
                     "--save-interval", "1000", "--log-interval", "10"]
            if args.train_max_update:
                extra += ["--max-update", str(args.train_max_update)]
            if model == "prefix" and args.prefix_from_plugin:
                if "plugin" in jobs:
                    raise SystemExit("--prefix-from-plugin needs a trained plugin checkpoint first")
                extra += ["--finetune-from-model", str(found["plugin"])]
            minutes = args.train_minutes + previous_training_minutes(extra)
            cmd = train_command(args, model, save_dir, minutes, extra)
            jobs[model] = (cmd, args.workdir / model / "train.log")
            found[model] = save_dir / "checkpoint_last.pt"
    for model, (cmd, log_path) in jobs.items():
        log_path.parent.mkdir(parents=True, exist_ok=True)
        commands[f"train_{model}"] = common.command_string(cmd, args.threads)
    if jobs:
        run_args = argparse.Namespace(parallel=True, threads_per_model=args.threads)
        common.run_trainings(run_args, jobs, args.train_minutes, "training")
    return found


def training_speed(args, model, commands, fp32=False):
    """Target tokens/s of fairseq-train: the mean wps of its updates after the first quarter
    (with ``fp32``, of the plugin's run without --bf16-autocast)."""
    name = f"{model}_fp32" if fp32 else model
    with tempfile.TemporaryDirectory() as tmp:
        cmd = train_command(args, model, tmp, 60.0, [
            "--max-update", str(args.train_speed_updates), "--no-save",
            "--disable-validation", "--log-interval", "1",
        ])
        if fp32:
            cmd.remove("--bf16-autocast")
        log_path = args.workdir / f"train_speed_{name}.log"
        common.run_logged(cmd, log_path, args.threads, f"fairseq-train ({name}, speed)")
    commands[f"train_speed_{name}"] = common.command_string(cmd, args.threads)
    rates = [float(r) for line in log_path.read_text().splitlines()
             if "train_inner" in line for r in WPS_RE.findall(line)]
    if not rates:
        raise SystemExit(f"{log_path}: no wps logged; raise --train-speed-updates")
    rates = rates[len(rates) // 4:]
    return sum(rates) / len(rates)


# ---------------------------------------------------------------- decoding
def mmlu_batches(args, model_name, task):
    """MMLU prompts cut from the left to fit the model, one-token-ish answers as targets."""
    import sentencepiece as spm
    import torch
    from fairseq.data import data_utils

    files = sorted(args.mmlu.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"{args.mmlu}: no *.jsonl files; pass --mmlu DIR of MMLU JSON lines")
    examples = [json.loads(line) for path in files for line in path.read_text().splitlines() if line]
    step = max(1, len(examples) // args.mmlu_examples)
    examples = examples[::step][: args.mmlu_examples]
    sp = spm.SentencePieceProcessor(
        model_file=str(data_dir(args, "plugin") / "sentencepiece.bpe.model")
    )
    dictionary = task.source_dictionary
    diffusion = model_name in ("plugin", "prefix")
    room = 255  # every model here holds 256 positions
    samples = []
    for example in examples:
        def encode(text):
            pieces = " ".join(sp.encode(text.strip(), out_type=str))
            return dictionary.encode_line(pieces, add_if_not_exist=False, append_eos=False).long()

        answer = encode(example["targets"])
        prompt = encode(example["inputs"])[-(room - len(answer) - 2):]
        if diffusion:
            source = torch.cat([torch.tensor([dictionary.bos()]), prompt])
        else:
            source = torch.cat([prompt, torch.tensor([dictionary.eos()])])
        target = torch.cat([answer, torch.tensor([dictionary.eos()])])
        samples.append((source, target))
    pad = dictionary.pad()

    def batch(items, start):
        sources = [s for s, _ in items]
        return {
            "id": torch.arange(start, start + len(items)),
            "nsentences": len(items),
            "net_input": {
                "src_tokens": data_utils.collate_tokens(sources, pad),
                "src_lengths": torch.tensor([len(s) for s in sources]),
            },
            "target": data_utils.collate_tokens([t for _, t in items], pad),
        }

    chunks = [(samples[i:i + args.batch_size], i) for i in range(0, len(samples), args.batch_size)]
    latency = [batch([s], i) for i, s in enumerate(samples[: args.latency_sentences])]
    throughput = [batch(items, start) for items, start in chunks]
    return latency, throughput, throughput[:1], max(len(t) for _, t in samples) - 1


# ------------------------------------------------------------------ report
def report_table(rows, results, training, peaks, parameters, batch_size):
    header = (
        "| model | decoding | BLEU | ms/sentence (bs 1) | sentences/s (bs {bs}) | GFLOP/s "
        "| % fp32 peak | % bf16 peak | vs | speed-up bs 1 | speed-up bs {bs} | ΔBLEU "
        "| params | train tokens/s |"
    ).format(bs=batch_size)
    lines = [header, "|---|---|" + "---:|" * 6 + "---|" + "---:|" * 5]
    for row in rows:
        r = results[(row.model, row.name)]
        bleu = f"{r['bleu']:.2f}" if "bleu" in r else "–"
        versus, speedup1, speedup64, delta = "", "", "", ""
        if row.baseline is not None:
            b = results[(row.model, row.baseline)]
            versus = row.baseline
            speedup1 = f"{b['latency_ms'] / r['latency_ms']:.2f}×"
            speedup64 = f"{r['sentences_per_second'] / b['sentences_per_second']:.2f}×"
            delta = f"{r['bleu'] - b['bleu']:+.2f}" if "bleu" in r else "–"
        gflops = r["gflops_per_second"]
        lines.append(
            f"| {row.model} | {row.name} | {bleu} | {r['latency_ms']:.1f} "
            f"| {r['sentences_per_second']:.1f} | {gflops:.2f} | {100 * gflops / peaks['fp32']:.1f} "
            f"| {100 * gflops / peaks['bf16']:.1f} | {versus} | {speedup1} | {speedup64} | {delta} "
            f"| {parameters[row.model] / 1e6:.2f}M | {training[row.model]:,.0f} |"
        )
    return "\n".join(lines)


def verdict(rows, results):
    """The issue's criterion: the fastest plugin setting within 1 BLEU of its best vs AR beam 5."""
    plugin = [r for r in rows if r.model in ("plugin", "prefix") and not r.mmlu]
    best = max(plugin, key=lambda r: results[(r.model, r.name)]["bleu"])
    best_bleu = results[(best.model, best.name)]["bleu"]
    close = [r for r in plugin if results[(r.model, r.name)]["bleu"] >= best_bleu - 1.0]
    fastest = min(close, key=lambda r: results[(r.model, r.name)]["latency_ms"])
    chosen = results[(fastest.model, fastest.name)]
    beam5 = results[("transformer", "beam 5")]
    greedy = results[("transformer", "greedy")]
    return (
        f"Plugin's best BLEU: {best_bleu:.2f} ({best.model}, {best.name}). Fastest plugin setting "
        f"within 1 BLEU of it at batch size 1: {fastest.model}, {fastest.name}: "
        f"{chosen['latency_ms']:.1f} ms/sentence, BLEU {chosen['bleu']:.2f}; autoregressive beam 5: "
        f"{beam5['latency_ms']:.1f} ms/sentence, BLEU {beam5['bleu']:.2f} -> "
        f"{beam5['latency_ms'] / chosen['latency_ms']:.2f}× lower latency, "
        f"{chosen['bleu'] - beam5['bleu']:+.2f} BLEU vs beam 5 "
        f"({chosen['bleu'] - greedy['bleu']:+.2f} vs greedy)."
    )


def bf16_training_line(training):
    """The plugin's training speed with --bf16-autocast against fp32, when it was measured."""
    if "plugin" not in training:
        return ""
    return (f"CPU bf16 training: the plugin's fairseq-train makes {training['plugin']:,.0f} target "
            f"tokens/s with --bf16-autocast and {training['plugin_fp32']:,.0f} in fp32 "
            f"({training['plugin'] / training['plugin_fp32']:.2f}x).\n\n")


def main(args):
    import logging

    import torch

    logging.disable(logging.WARNING)
    if args.smoke:
        smoke_settings(args)
    start = time.time()
    args.from_workdir, args.workdir = args.from_workdir.resolve(), args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    raw = common.find_data(args.data)
    args.mmlu = find_shared(args.mmlu, "instruct", "mmlu", "2-shot", "val")
    for model in MODELS:
        if not (data_dir(args, model) / "dict.de.txt").is_file():
            raise SystemExit(
                f"{data_dir(args, model)} has no binarized data; run benchmarks/bench_vs_cmlm.py "
                "first (or pass its work directory as --from-workdir)"
            )
    commands = {}
    paths = checkpoints(args, commands)
    torch.set_num_threads(args.threads)
    common.log("measuring the matmul peaks")
    peaks = matmul_peaks(args.threads)
    references = (raw / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    from fairseq import utils

    from diffusion_plugin.files import write_atomically

    utils.import_user_module(argparse.Namespace(user_dir=str(common.USER_DIR)))
    measured = args.models.split(",")
    unknown = set(measured) - set(MODELS)
    if unknown:
        raise SystemExit(f"--models {sorted(unknown)}: models are {', '.join(MODELS)}")
    rows = [r for r in translation_rows(args.length_beam) + MMLU_ROWS if r.model in measured]
    results, parameters, training = {}, {}, {}
    for model in measured:
        network, task = load_model(data_dir(args, model), paths[model])
        parameters[model] = sum(p.numel() for p in network.parameters())
        batches = test_batches(args, task)
        if any(r.mmlu and r.model == model for r in rows):
            mmlu = mmlu_batches(args, model, task)
        for row in (r for r in rows if r.model == model):
            common.log(f"decoding: {model}, {row.name}")
            if row.mmlu:
                if model == "transformer":
                    row.options["max_len_b"] = mmlu[3]
                generator = build_generator(model, network, task, row.options, args.max_len_b)
                results[(model, row.name)] = measure(row, network, generator, mmlu[:3], None, None)
            else:
                generator = build_generator(model, network, task, row.options, args.max_len_b)
                results[(model, row.name)] = measure(
                    row, network, generator, batches, references, task.target_dictionary
                )
        common.log(f"training speed: {model}")
        training[model] = training_speed(args, model, commands)
        if model == "plugin":
            training["plugin_fp32"] = training_speed(args, model, commands, fp32=True)

    table = report_table(rows, results, training, peaks, parameters, args.batch_size)
    command = "python -m benchmarks.bench_speed " + " ".join(sys.argv[1:])
    report = (
        f"{table}\n\n{verdict(rows, results)}\n\n"
        f"{bf16_training_line(training)}"
        f"Machine: {machine(args.threads)}. Matmul peak (2048², torch.matmul): "
        f"{peaks['fp32']:.1f} GFLOP/s fp32, {peaks['bf16']:.1f} GFLOP/s bf16.\n"
        f"test_2016_flickr: {args.test_lines or len(references)} sentences at batch size "
        f"{args.batch_size}, latency over the first {args.latency_sentences} one at a time; "
        f"MMLU 2-shot: {args.mmlu_examples} examples, prompts cut to the models' 256 positions. "
        f"Command: `{command}`{' (smoke: numbers mean nothing)' if args.smoke else ''}.\n"
    )
    print("\n" + report, flush=True)
    write_atomically(args.workdir / "results.md", report)
    write_atomically(args.workdir / "results.json", json.dumps({
        "rows": [
            {"model": r.model, "decoding": r.name, "options": r.options, "baseline": r.baseline,
             "bf16": r.bf16, **results[(r.model, r.name)]} for r in rows
        ],
        "training_target_tokens_per_second": training,
        "parameters": parameters,
        "matmul_peak_gflops": peaks,
        "checkpoints": {m: str(p) for m, p in paths.items()},
        "commands": commands,
        "command": command,
        "machine": machine(args.threads),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seconds": time.time() - start,
    }, indent=2) + "\n")
    common.log(f"done in {(time.time() - start) / 60:.1f} min; results in {args.workdir}/results.{{md,json}}")


if __name__ == "__main__":
    main(get_parser().parse_args())
