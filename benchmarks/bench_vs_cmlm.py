#!/usr/bin/env python3
"""
Benchmark the plugin's diffusion model against fairseq's CMLM on Multi30k de->en.

Both models get the same sentencepiece vocabulary (one joint model and one
dictionary, built by scripts/prepare_prompted.py), the same training budget
(fairseq's --stop-time-hours, each run pinned to the same number of threads),
the same optimizer and the same length-beam decoding settings. Warm-up lengths
default to a fraction of the updates each model is expected to make in the
budget, measured by a short calibration run. The script trains both models,
decodes test_2016_flickr with fairseq-generate, scores the detokenized output
with sacreBLEU and prints one markdown table; the table and a JSON file with
every number and command go to --workdir.

``--models plugin,plugin_fp32`` compares the plugin trained with ``--bf16-autocast``
(bf16 autocast) and in fp32 under the same budget: each is decoded in bf16 and in
fp32 (``--decode-precisions``, fairseq-generate ``--model-overrides``), and the
table gives training target tokens/s, decoding sentences/s and BLEU of each.
"""

import argparse
import json
import logging
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks.common import (MODEL_ARGS, RAW_SPLITS, REPO, SRC, TGT, USER_DIR, Runner, fairseq_cli,
                               find_data, log, optimization_args, parse_generate, prepare_translation,
                               slice_corpus, table)

MODELS = {
    "plugin": "diffusion_xlmr_tiny (plugin)",
    "plugin_fp32": "diffusion_xlmr_tiny fp32 (plugin)",
    "cmlm": "cmlm_transformer (fairseq)",
}
PLUGIN_MODELS = ("plugin", "plugin_fp32")
DEFAULT_TEMPLATE = "{src} English:"
DEFAULTS = {
    "plugin": {"lr": 1e-3, "max_tokens": 1536, "train_args": "--bf16-autocast --time-sampling single"},
    "plugin_fp32": {"lr": 1e-3, "max_tokens": 1536, "train_args": "--time-sampling single"},
    "cmlm": {"lr": 5e-4, "max_tokens": 4096, "train_args": ""},
}
INNER_RE = re.compile(r"num_updates=(\d+),.* wall=(\d+)")
EPOCH_WPS_RE = re.compile(r"\| train \|.* wps[= ]([\d.]+)")


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=None,
                        help="directory with Multi30k {train,val,test_2016_flickr}.{de,en} "
                             "(default: the first shared/data/multi30k found in a parent "
                             "directory of the repository)")
    parser.add_argument("--workdir", type=Path, default=REPO / "work" / "bench_vs_cmlm",
                        help="output directory for data, checkpoints, logs and results")
    parser.add_argument("--budget-minutes", type=float, default=45.0,
                        help="training time per model (fairseq's --stop-time-hours)")
    parser.add_argument("--threads-per-model", type=int, default=1,
                        help="OMP/MKL threads of each training and decoding run")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--parallel", dest="parallel", action="store_true", default=True,
                      help="train both models at the same time (default)")
    mode.add_argument("--sequential", dest="parallel", action="store_false",
                      help="train the models one after the other")
    parser.add_argument("--models", type=models_list, default=["plugin", "cmlm"],
                        help=f"comma-separated models to train and decode, of {', '.join(MODELS)} "
                             "(plugin: --bf16-autocast; plugin_fp32: the same in fp32)")
    parser.add_argument("--decode-precisions", type=precisions_list, default=["bf16", "fp32"],
                        help="precisions each plugin model is decoded in (bf16: --bf16-autocast "
                             "autocast), one table row each")
    for model in MODELS:
        flag = model.replace("_", "-")
        parser.add_argument(f"--{flag}-lr", dest=f"{model}_lr", type=float,
                            default=DEFAULTS[model]["lr"],
                            help=f"peak learning rate of {model} (inverse_sqrt schedule)")
        parser.add_argument(f"--{flag}-max-tokens", dest=f"{model}_max_tokens", type=int,
                            default=DEFAULTS[model]["max_tokens"],
                            help=f"tokens per batch of {model} (plugin: prompt + target; "
                                 "CMLM: max(src, tgt))")
        parser.add_argument(f"--{flag}-train-args", dest=f"{model}_train_args",
                            default=DEFAULTS[model]["train_args"],
                            help=f"extra fairseq-train arguments of {model}, given last so "
                                 "they override the shared settings")
        parser.add_argument(f"--{flag}-warmup-updates", dest=f"{model}_warmup_updates",
                            type=int, default=None,
                            help=f"warm-up updates of {model} (default: --warmup-fraction "
                                 "of its calibrated expected updates)")
    parser.add_argument("--warmup-fraction", type=float, default=0.1,
                        help="default warm-up as a fraction of the expected updates")
    parser.add_argument("--calibration-minutes", type=float, default=1.5,
                        help="length of the calibration runs that measure updates/s")
    parser.add_argument("--vocab-size", type=int, default=8000,
                        help="joint sentencepiece vocabulary size")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE,
                        help="prompt template of the plugin's source side ({src} = German)")
    parser.add_argument("--prep-workers", type=int, default=2,
                        help="workers of the data preparation")
    parser.add_argument("--skip-train", action="store_true",
                        help="decode and score the checkpoints already in --workdir "
                             "(with the data and options recorded in its training.json)")
    parser.add_argument("--iter-decode-max-iter", type=int, default=10,
                        help="refinement steps of both decoders")
    parser.add_argument("--length-beam", type=int, default=5,
                        help="candidate lengths per sentence (--iter-decode-with-beam)")
    parser.add_argument("--batch-size", type=int, default=64, help="decoding batch size")
    parser.add_argument("--train-lines", type=int, default=None,
                        help="for smoke tests: train on the first N pairs only")
    parser.add_argument("--test-lines", type=int, default=None,
                        help="for smoke tests: decode and score the first N test pairs only")
    return parser


def models_list(text):
    """--models: known model names, each once."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODELS]
    if unknown or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give distinct models of {', '.join(MODELS)}, comma-separated"
        )
    return names


def precisions_list(text):
    """--decode-precisions: bf16 and/or fp32."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or any(name not in ("bf16", "fp32") for name in names):
        raise argparse.ArgumentTypeError(f"{text!r}: give bf16, fp32 or bf16,fp32")
    return names


def data_dir(model, paths):
    return paths["plugin_bin"] if model in PLUGIN_MODELS else paths["cmlm_bin"]


# --------------------------------------------------------------- training


def train_command(args, model, paths, warmup, calibration=False):
    """fairseq-train arguments: shared optimization settings plus each model's own.

    A calibration run is short, saves nothing, skips validation and logs every update.
    --required-batch-size-multiple 1 (here and in decoding) keeps fairseq 0.12 from
    dropping a last batch whose size is not a multiple of 8 (fairseq issue #5036).
    """
    minutes = args.calibration_minutes if calibration else args.budget_minutes
    cmd = [fairseq_cli("fairseq-train"), str(data_dir(model, paths)), *MODEL_ARGS[model]]
    cmd += optimization_args(
        getattr(args, f"{model}_lr"), getattr(args, f"{model}_max_tokens"), warmup, minutes
    )
    cmd += shlex.split(getattr(args, f"{model}_train_args"))
    if calibration:
        cmd += ["--save-dir", str(paths[model] / "calibration"), "--no-save",
                "--disable-validation", "--log-interval", "1"]
    else:
        cmd += ["--save-dir", str(paths[model] / "checkpoints"), "--no-epoch-checkpoints",
                "--validate-interval", "1000", "--save-interval", "1000", "--log-interval", "10"]
    return cmd


def updates_per_second(runner, name):
    """Update rate between the first and the last update logged by a calibration run."""
    points = [(int(u), int(w)) for u, w in INNER_RE.findall(runner.output(name))]
    if not points:
        raise SystemExit(f"{name}: no update in the calibration run; raise --calibration-minutes")
    (u0, w0), (u1, w1) = points[0], points[-1]
    return (u1 - u0) / (w1 - w0) if w1 > w0 else u1 / max(w1, 1)


def run_all(args, runner, jobs):
    """{name: cmd} at the same time (--parallel) or in turn; {name: provenance}."""
    if args.parallel:
        return runner.run_together(jobs)
    return {name: runner.run(name, cmd) for name, cmd in jobs.items()}


def calibrate(args, runner, paths, calibration):
    """Warm-up updates of each model: given, or a fraction of its expected updates."""
    warmup = {model: getattr(args, f"{model}_warmup_updates") for model in args.models}
    todo = [model for model in args.models if warmup[model] is None]
    if not todo:
        return warmup
    jobs = {}
    for model in todo:
        shutil.rmtree(paths[model] / "calibration", ignore_errors=True)
        jobs[f"calibrate_{model}"] = train_command(args, model, paths, warmup=1, calibration=True)
    runs = run_all(args, runner, jobs)
    for model in todo:
        rate = updates_per_second(runner, f"calibrate_{model}")
        expected = rate * args.budget_minutes * 60
        warmup[model] = max(1, round(args.warmup_fraction * expected))
        calibration[model] = {"updates_per_second": rate, "expected_updates": expected,
                              "command": runs[f"calibrate_{model}"]["command"]}
        log(f"{model}: {rate:.3f} updates/s, ~{expected:.0f} updates expected, "
            f"warm-up {warmup[model]} updates")
        shutil.rmtree(paths[model] / "calibration", ignore_errors=True)
    return warmup


def train(args, runner, paths, commands, calibration):
    warmup = calibrate(args, runner, paths, calibration)
    jobs = {}
    for model in args.models:
        shutil.rmtree(paths[model] / "checkpoints", ignore_errors=True)
        jobs[f"train_{model}"] = train_command(args, model, paths, warmup[model])
    runs = run_all(args, runner, jobs)
    commands.update({name: run["command"] for name, run in runs.items()})
    return runs


# --------------------------------------------------------------- decoding
def training_tokens_per_second(runner, model):
    """Mean over the epochs of fairseq's end-of-epoch wps (target tokens per second)."""
    rates = [float(rate) for rate in EPOCH_WPS_RE.findall(runner.output(f"train_{model}"))]
    return sum(rates) / len(rates) if rates else None


def decode(args, runner, model, paths, commands, precision=None):
    """fairseq-generate on the test set: (detokenized hypotheses by id, sentences/s).

    A plugin model is decoded with --bf16-autocast set to ``precision == "bf16"``.
    """
    checkpoint = paths[model] / "checkpoints" / "checkpoint_last.pt"
    if not checkpoint.exists():
        raise SystemExit(f"{checkpoint} not found; train first (without --skip-train)")
    # --user-dir for CMLM as well: importing the plugin registers the globals that
    # torch >= 2.6 needs to load any fairseq checkpoint (checkpoint_loading.py).
    cmd = [
        fairseq_cli("fairseq-generate"), str(data_dir(model, paths)),
        "--user-dir", str(USER_DIR),
    ]
    if model in PLUGIN_MODELS:
        cmd += ["--task", "prompted_translation"]
    else:
        cmd += ["--task", "translation_lev", "--iter-decode-eos-penalty", "0"]
    cmd += [
        "--source-lang", SRC, "--target-lang", TGT,
        "--path", str(checkpoint), "--gen-subset", "test",
        "--iter-decode-max-iter", str(args.iter_decode_max_iter),
        "--iter-decode-with-beam", str(args.length_beam),
        "--batch-size", str(args.batch_size),
        "--post-process", "sentencepiece", "--cpu", "--num-workers", "0",
        "--required-batch-size-multiple", "1",
    ]
    run_name = model
    if precision is not None:
        cmd += ["--model-overrides", str({"bf16_autocast": precision == "bf16"})]
        run_name = f"{model}_{precision}"
    commands[f"generate_{run_name}"] = runner.run(f"generate_{run_name}", cmd)["command"]
    decoded = parse_generate(runner.output(f"generate_{run_name}"))
    ordered = [decoded["hypotheses"][i] for i in sorted(decoded["hypotheses"], key=int)]
    output = paths[model] / f"generate-test{'' if precision is None else '.' + precision}.detok.en"
    output.write_text("".join(h + "\n" for h in ordered), encoding="utf-8")
    return ordered, decoded["sentences_per_second"]


def prepare(args, runner, raw, paths, commands):
    """The data of both model families (common.prepare_translation), from the first
    --train-lines train pairs and --test-lines test pairs."""
    for key in ("plugin_bin", "cmlm_spm", "cmlm_bin"):
        shutil.rmtree(paths[key], ignore_errors=True)
    with tempfile.TemporaryDirectory() as sliced:
        slice_corpus(raw, Path(sliced), {"train": args.train_lines, "val": None,
                                         "test_2016_flickr": args.test_lines})
        runs = prepare_translation(runner, Path(sliced), paths["plugin_bin"], paths["cmlm_spm"],
                                   paths["cmlm_bin"], args.template, args.vocab_size, args.prep_workers)
    commands.update({name: run["command"] for name, run in runs.items()})


def checkpoint_stats(model, paths):
    """Unique parameters, updates and last validation loss of a model's final checkpoint."""
    logging.disable(logging.INFO)  # fairseq's import and task set-up log at INFO level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fairscale's use of torch.cuda.amp
        from fairseq import checkpoint_utils, tasks, utils

    utils.import_user_module(argparse.Namespace(user_dir=str(USER_DIR)))
    path = paths[model] / "checkpoints" / "checkpoint_last.pt"
    overrides = {"data": str(data_dir(model, paths))}
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path), arg_overrides=overrides)
    task = tasks.setup_task(state["cfg"].task)
    network = task.build_model(state["cfg"].model)
    network.load_state_dict(state["model"], strict=True)
    return {
        # parameters() yields a tied (shared) weight once
        "parameters": sum(p.numel() for p in network.parameters()),
        "updates": state["optimizer_history"][-1]["num_updates"],
        "valid_loss": state["extra_state"].get("val_loss"),
    }


def results_table(results):
    def number(value, digits):
        return "n/a" if value is None else f"{value:,.{digits}f}"

    rows = [[MODELS[r["model"]], r["decoded_in"], f"{r['parameters'] / 1e6:.2f}M", f"{r['updates']:,}",
             number(r["train_tokens_per_second"], 0), number(r["valid_loss"], 3), f"{r['bleu']:.2f}",
             number(r["sentences_per_second"], 2)] for r in results.values()]
    return table(["model", "decoded in", "parameters", "updates", "train tokens/s", "valid loss",
                  "BLEU", "sentences/s"], rows, align="llrrrrrr")


def main(args):
    import sacrebleu

    # `kill` stops the runs this script started, as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    start = time.time()
    workdir = args.workdir.resolve()
    paths = {
        "workdir": workdir,
        "plugin_bin": workdir / "data" / "plugin-bin",
        "cmlm_spm": workdir / "data" / "cmlm-spm",
        "cmlm_bin": workdir / "data" / "cmlm-bin",
        **{model: workdir / model for model in MODELS},
    }
    for model in args.models:
        paths[model].mkdir(parents=True, exist_ok=True)
    runner = Runner(workdir, args.threads_per_model)
    record_path = workdir / "training.json"
    if args.skip_train:
        if not record_path.exists():
            raise SystemExit(f"{record_path} not found; train first (without --skip-train)")
        record = json.loads(record_path.read_text())
    else:
        raw, commands, calibration = find_data(args.data), {}, {}
        prepare(args, runner, raw, paths, commands)
        usage = train(args, runner, paths, commands, calibration)
        options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        record = {"options": options, "data": str(raw), "commands": commands,
                  "calibration": calibration, "training_time": usage}
        record_path.write_text(json.dumps(record, indent=2) + "\n")
    trained, raw, commands = record["options"], Path(record["data"]), dict(record["commands"])

    references = (raw / f"{RAW_SPLITS['test']}.{TGT}").read_text(encoding="utf-8").splitlines()
    references = references[: trained["test_lines"]]
    bleu = sacrebleu.metrics.BLEU()
    results = {}
    # a record written before --models existed trained the plugin and CMLM
    for model in trained.get("models", ["plugin", "cmlm"]):
        stats = checkpoint_stats(model, paths)
        stats["train_tokens_per_second"] = training_tokens_per_second(runner, model)
        precisions = args.decode_precisions if model in PLUGIN_MODELS else [None]
        for precision in precisions:
            hypotheses, speed = decode(args, runner, model, paths, commands, precision)
            if len(hypotheses) != len(references):
                raise SystemExit(
                    f"{model}: {len(hypotheses)} hypotheses for {len(references)} references"
                )
            score = bleu.corpus_score(hypotheses, [references])
            results[model if precision is None else f"{model}_{precision}"] = {
                "model": model,
                "decoded_in": precision or "fp32",
                **stats,
                "bleu": score.score,
                "bleu_string": str(score),
                "sentences_per_second": speed,
            }
    signature = str(bleu.get_signature())

    report = (
        f"{results_table(results)}\n\nsacreBLEU signature: {signature}\n\n"
        f"test_2016_flickr ({len(references)} sentences); training budget "
        f"{trained['budget_minutes']:g} min per model on {trained['threads_per_model']} "
        f"thread(s) each ({'in parallel' if trained['parallel'] else 'in turn'}); decoding on "
        f"{args.threads_per_model} thread(s); valid loss: each model's own training "
        f"objective on val, base 2, as fairseq logs it.\n"
    )
    print("\n" + report, flush=True)
    (workdir / "results.md").write_text(report)
    (workdir / "results.json").write_text(json.dumps({
        "results": results,
        "sacrebleu_signature": signature,
        **record,
        "commands": commands,
        "decoding_threads": args.threads_per_model,
        "seconds_this_invocation": time.time() - start,
    }, indent=2) + "\n")
    log(f"done in {(time.time() - start) / 60:.1f} min; results in {workdir}/results.{{md,json}}")


if __name__ == "__main__":
    main(get_parser().parse_args())
