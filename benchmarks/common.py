"""What the benchmarks share: the repository, Multi30k, running fairseq commands on a
fixed number of threads, and the training settings of the plugin and CMLM.

Each benchmark runs from the repository root as ``python -m benchmarks.NAME``.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER_DIR = REPO / "diffusion_plugin"
SRC, TGT = "de", "en"
RAW_SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
NUM_UPDATES_RE = re.compile(r"num_updates[= ](\d+)")


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def find_data(path, extra=()):
    """The Multi30k directory (with the files ``extra`` too): --data, else
    shared/data/multi30k above the repository."""
    candidates = [path.resolve()] if path is not None else [
        parent / "shared" / "data" / "multi30k" for parent in REPO.parents
    ]
    needed = [f"{name}.{lang}" for name in RAW_SPLITS.values() for lang in (SRC, TGT)]
    needed += list(extra)
    for candidate in candidates:
        if all((candidate / name).is_file() for name in needed):
            return candidate
    raise SystemExit(
        f"Multi30k not found (looked in {', '.join(map(str, candidates))}); "
        f"pass --data DIR holding {', '.join(needed)}"
    )


def fairseq_cli(name):
    """A console script of the running environment (fairseq-train, ...)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name) or name


def thread_env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                PYTHONUNBUFFERED="1")


def command_string(cmd, threads):
    return f"OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} " + shlex.join(cmd)


def tail(path, lines=40):
    text = Path(path).read_text(errors="replace").splitlines() if Path(path).exists() else []
    return "\n".join(text[-lines:])


def run_logged(cmd, log_path, threads, what):
    """Runs cmd to completion with its output in log_path; exits with the tail on failure."""
    with open(log_path, "w") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=thread_env(threads))
    if code != 0:
        log(f"{what} failed (exit {code}); last lines of {log_path}:\n{tail(log_path)}")
        sys.exit(1)


MODEL_ARGS = {
    "plugin": [
        "--user-dir", str(USER_DIR),
        "--task", "prompted_translation",
        "--arch", "diffusion_xlmr_tiny",
        "--criterion", "masked_diffusion",
        "--num-diffusion-steps", "50", "--length-loss-factor", "0.1",
    ],
    "cmlm": [
        "--task", "translation_lev", "--noise", "random_mask",
        "--arch", "cmlm_transformer",
        "--criterion", "nat_loss",
        "--encoder-layers", "3", "--decoder-layers", "3",
        "--encoder-embed-dim", "256", "--decoder-embed-dim", "256",
        "--encoder-ffn-embed-dim", "1024", "--decoder-ffn-embed-dim", "1024",
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
        "--share-all-embeddings", "--apply-bert-init",
        "--encoder-learned-pos", "--decoder-learned-pos",
        "--max-source-positions", "256", "--max-target-positions", "256",
        "--pred-length-offset", "--length-loss-factor", "0.1",
    ],
}
MODEL_ARGS["plugin_fp32"] = MODEL_ARGS["plugin"]
MODEL_ARGS["transformer"] = [
    "--task", "translation", "--arch", "transformer",
    "--criterion", "label_smoothed_cross_entropy",
    "--encoder-layers", "3", "--decoder-layers", "3",
    "--encoder-embed-dim", "256", "--decoder-embed-dim", "256",
    "--encoder-ffn-embed-dim", "1024", "--decoder-ffn-embed-dim", "1024",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
    "--share-all-embeddings", "--encoder-learned-pos", "--decoder-learned-pos",
    "--max-source-positions", "256", "--max-target-positions", "256",
]


def optimization_args(lr, max_tokens, warmup, minutes):
    """The fairseq-train settings every model of the benchmarks shares."""
    return [
        "--source-lang", SRC, "--target-lang", TGT,
        "--optimizer", "adam", "--adam-betas", "(0.9,0.98)",
        "--clip-norm", "1.0", "--weight-decay", "0.01",
        "--lr", str(lr), "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", str(warmup), "--warmup-init-lr", "1e-07",
        "--dropout", "0.1", "--label-smoothing", "0.1",
        "--max-tokens", str(max_tokens),
        "--stop-time-hours", f"{minutes / 60:.6g}",
        "--seed", "1", "--cpu", "--num-workers", "0", "--log-format", "simple",
        "--required-batch-size-multiple", "1",
    ]


def last_num_updates(log_path):
    found = NUM_UPDATES_RE.findall(tail(log_path, 20))
    return int(found[-1]) if found else 0


def run_trainings(args, jobs, minutes, what):
    """Runs {model: (cmd, log_path)} together or in turn, reporting progress every minute.

    Returns each run's wall-clock and CPU (user + system) seconds; on a failure,
    stops the other run and exits.
    """
    batches = [list(jobs)] if args.parallel else [[model] for model in jobs]
    usage = {}
    for batch in batches:
        running = {}
        try:
            for model in batch:
                cmd, log_path = jobs[model]
                log(f"{what} {model}: {minutes:g} min on {args.threads_per_model} thread(s), "
                    f"log {log_path}")
                with open(log_path, "w") as out:
                    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                            env=thread_env(args.threads_per_model))
                running[model] = (proc, time.time())
            next_report = time.time() + 60
            while running:
                time.sleep(2)
                for model, (proc, start) in list(running.items()):
                    pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                    if pid == 0:
                        continue
                    code = proc.returncode = os.waitstatus_to_exitcode(status)
                    del running[model]
                    log_path = jobs[model][1]
                    if code != 0:
                        log(f"{what} {model} failed (exit {code}); last lines of {log_path}:\n"
                            f"{tail(log_path)}")
                        sys.exit(1)
                    usage[model] = {"wall_seconds": time.time() - start,
                                    "cpu_seconds": rusage.ru_utime + rusage.ru_stime}
                    log(f"{what} {model} done in {usage[model]['wall_seconds'] / 60:.1f} min "
                        f"({usage[model]['cpu_seconds'] / 60:.1f} CPU-min), "
                        f"{last_num_updates(log_path)} updates")
                if running and time.time() >= next_report:
                    next_report += 60
                    for model, (_, start) in running.items():
                        log(f"{what} {model}: {(time.time() - start) / 60:.1f}/{minutes:g} min, "
                            f"update {last_num_updates(jobs[model][1])}")
        finally:
            for model, (proc, _) in running.items():
                log(f"stopping {what} {model}")
                proc.terminate()
                proc.wait()
    return usage


def prepare_multi30k(args, raw, paths, commands):
    """Multi30k binarized twice with one sentencepiece model and dictionary: prompted for the
    plugin (scripts/prepare_prompted.py, into paths["plugin_bin"]) and as plain pairs for
    fairseq's models (paths["cmlm_bin"]). ``args``: prep_workers, template, vocab_size,
    train_lines and test_lines (None: every line)."""
    import sentencepiece as spm

    for key in ("plugin_bin", "cmlm_spm", "cmlm_bin"):
        shutil.rmtree(paths[key], ignore_errors=True)
    paths["cmlm_spm"].mkdir(parents=True)
    threads = args.prep_workers
    with tempfile.TemporaryDirectory() as tmp:
        prefixes = {split: f"{raw / name}" for split, name in RAW_SPLITS.items()}
        for split, limit in (("train", args.train_lines), ("test", args.test_lines)):
            if limit is None:
                continue
            for lang in (SRC, TGT):
                with open(f"{prefixes[split]}.{lang}", encoding="utf-8") as f:
                    head = [line for _, line in zip(range(limit), f)]
                Path(tmp, f"{split}.{lang}").write_text("".join(head), encoding="utf-8")
            prefixes[split] = os.path.join(tmp, split)

        cmd = [
            sys.executable, str(REPO / "scripts" / "prepare_prompted.py"),
            "--source-lang", SRC, "--target-lang", TGT,
            "--trainpref", prefixes["train"],
            "--validpref", prefixes["valid"],
            "--testpref", prefixes["test"],
            "--destdir", str(paths["plugin_bin"]),
            "--template", args.template,
            "--vocab-size", str(args.vocab_size),
            "--workers", str(args.prep_workers),
        ]
        commands["prepare_plugin"] = command_string(cmd, threads)
        log("preparing the plugin's data (prompted; trains the sentencepiece model)")
        run_logged(cmd, paths["workdir"] / "prepare_plugin.log", threads, "prepare_prompted.py")

        spm_model = paths["plugin_bin"] / "sentencepiece.bpe.model"
        log("encoding the unprompted text with the same sentencepiece model for CMLM")
        sp = spm.SentencePieceProcessor(model_file=str(spm_model))
        for split, prefix in prefixes.items():
            for lang in (SRC, TGT):
                with open(f"{prefix}.{lang}", encoding="utf-8") as f:
                    pieces = sp.encode([line.strip() for line in f], out_type=str)
                with open(paths["cmlm_spm"] / f"{split}.{lang}", "w", encoding="utf-8") as f:
                    f.writelines(" ".join(p) + "\n" for p in pieces)
    commands["encode_cmlm"] = (
        f"sentencepiece.SentencePieceProcessor(model_file='{spm_model}')"
        f".encode(stripped_lines, out_type=str) for {raw}/"
        f"{{{','.join(RAW_SPLITS.values())}}}.{{{SRC},{TGT}}} -> {paths['cmlm_spm']}"
    )

    cmd = [
        fairseq_cli("fairseq-preprocess"),
        "--source-lang", SRC, "--target-lang", TGT,
        "--trainpref", str(paths["cmlm_spm"] / "train"),
        "--validpref", str(paths["cmlm_spm"] / "valid"),
        "--testpref", str(paths["cmlm_spm"] / "test"),
        "--srcdict", str(paths["plugin_bin"] / f"dict.{SRC}.txt"),
        "--tgtdict", str(paths["plugin_bin"] / f"dict.{TGT}.txt"),
        "--destdir", str(paths["cmlm_bin"]),
        "--workers", str(args.prep_workers),
    ]
    commands["prepare_cmlm"] = command_string(cmd, threads)
    log("binarizing the CMLM data with the plugin's dictionary")
    run_logged(cmd, paths["workdir"] / "prepare_cmlm.log", threads, "fairseq-preprocess")
