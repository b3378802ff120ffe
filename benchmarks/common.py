"""What the benchmarks share: the repository, Multi30k and its preparation, the runner
of fairseq commands (a work directory with its state file, locks and each run's
provenance), fairseq-generate's output, markdown tables, and the training settings of
the plugin and CMLM.

Each benchmark runs from the repository root as ``python -m benchmarks.NAME``.
"""

import fcntl
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER_DIR = REPO / "diffusion_plugin"
SRC, TGT = "de", "en"
RAW_SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}


def log(message):
    print(f"[{Path(sys.argv[0]).stem} {time.strftime('%H:%M:%S')}] {message}", flush=True)


def find_shared(path, parts, needed=(), flag="--data"):
    """``path`` (given by ``flag``), else the first shared/data/PARTS above the repository,
    holding the files ``needed``."""
    candidates = [path.resolve()] if path is not None else [
        parent.joinpath("shared", "data", *parts) for parent in REPO.parents
    ]
    for candidate in candidates:
        if candidate.is_dir() and all((candidate / name).is_file() for name in needed):
            return candidate
    holding = f" holding {', '.join(needed)}" if needed else ""
    raise SystemExit(f"{'/'.join(parts)} not found (looked in {', '.join(map(str, candidates))}); "
                     f"pass {flag} DIR{holding}")


def find_data(path, extra=()):
    """The Multi30k directory (with the files ``extra`` too): --data, else
    shared/data/multi30k above the repository."""
    needed = [f"{name}.{lang}" for name in RAW_SPLITS.values() for lang in (SRC, TGT)]
    return find_shared(path, ["multi30k"], needed + list(extra))


def fairseq_cli(name):
    """A console script of the running environment (fairseq-train, ...)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name) or name


BASELINES = {
    "transformer": ["--task", "translation", "--arch", "transformer",
                    "--criterion", "label_smoothed_cross_entropy"],
    "cmlm": ["--task", "translation_lev", "--noise", "random_mask", "--arch", "cmlm_transformer",
             "--criterion", "nat_loss", "--apply-bert-init", "--pred-length-offset",
             "--length-loss-factor", "0.1"],
}


def baseline_args(arch, layers, dim, heads):
    """fairseq-train options of fairseq's ``transformer`` or ``cmlm`` (cmlm_transformer) with
    ``layers`` layers in the encoder and as many in the decoder, FFN 4 × ``dim``, shared
    embeddings and 256 learned positions."""
    shape = []
    for side in ("encoder", "decoder"):
        shape += [f"--{side}-layers", str(layers), f"--{side}-embed-dim", str(dim),
                  f"--{side}-ffn-embed-dim", str(4 * dim), f"--{side}-attention-heads", str(heads),
                  f"--{side}-learned-pos"]
    return [*BASELINES[arch], *shape, "--share-all-embeddings",
            "--max-source-positions", "256", "--max-target-positions", "256"]


MODEL_ARGS = {  # the benchmarks' models of about 7M parameters
    "plugin": [
        "--user-dir", str(USER_DIR), "--task", "prompted_translation", "--arch", "diffusion_xlmr_tiny",
        "--criterion", "masked_diffusion", "--num-diffusion-steps", "50", "--length-loss-factor", "0.1",
    ],
    "cmlm": baseline_args("cmlm", 3, 256, 4),
    "transformer": baseline_args("transformer", 3, 256, 4),
}


def optimization_args(lr, max_tokens, warmup, minutes):
    """The fairseq-train settings every model of the benchmarks shares."""
    return [
        "--source-lang", SRC, "--target-lang", TGT, "--optimizer", "adam", "--adam-betas", "(0.9,0.98)",
        "--clip-norm", "1.0", "--weight-decay", "0.01", "--lr", str(lr), "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", str(warmup), "--warmup-init-lr", "1e-07", "--dropout", "0.1",
        "--label-smoothing", "0.1", "--max-tokens", str(max_tokens), "--stop-time-hours", f"{minutes / 60:.6g}",
        "--seed", "1", "--cpu", "--num-workers", "0", "--log-format", "simple", "--required-batch-size-multiple", "1",
    ]


# ------------------------------------------------------------------ running
class Runner:
    """A work directory, its state file (``state.json``: ``settings`` and the result of
    each done stage under ``stages``), its locks and the runs that fill it.

    Several drivers may share one work directory: :meth:`claim` gives a stage to one of
    them, :meth:`record` merges its result into the state file.
    """

    def __init__(self, workdir, threads=1, settings=None):
        self.threads = threads
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.workdir / "state.json"
        self.state, self.stage_locks = {}, {}
        self.reload()
        described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                                   capture_output=True, text=True)
        self.commit = described.stdout.strip() or None  # the code every run used
        if settings is not None:
            if self.state.get("settings", settings) != settings:
                raise SystemExit(f"{self.workdir} holds a run with {self.state['settings']}, not {settings}; "
                                 "pass another --workdir or remove it")
            if "settings" not in self.state:
                with self.lock("state"):
                    self.reload()
                    self.state.setdefault("settings", settings)
                    self.write_state()

    def write_state(self):
        """state.json replaced whole (call under the state lock)."""
        tmp = self.state_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        tmp.replace(self.state_path)

    def done(self, key):
        return key in self.state.get("stages", {})

    def lock(self, name):
        """An exclusive lock on WORKDIR/locks/NAME.lock (blocks while another process holds it)."""
        (self.workdir / "locks").mkdir(exist_ok=True)
        handle = open(self.workdir / "locks" / f"{name}.lock", "w")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    def reload(self):
        if self.state_path.exists():
            self.state = json.loads(self.state_path.read_text())

    def claim(self, key):
        """Whether this process is to run stage ``key``: False when it is done, also when
        another driver on the same work directory (which this waits for) has just done it.
        The stage stays locked until :meth:`record` stores its result (or the process ends)."""
        if self.done(key):
            return False
        handle = self.lock(f"stage-{key}")
        self.reload()
        if self.done(key):
            handle.close()
            return False
        self.stage_locks[key] = handle
        return True

    def record(self, key, value):
        """Store a stage's result in state.json, merged with what other drivers stored."""
        with self.lock("state"):
            self.reload()
            self.state.setdefault("stages", {})[key] = value
            self.write_state()
        if key in self.stage_locks:
            self.stage_locks.pop(key).close()

    def run(self, name, cmd, env=None):
        """Run cmd on the runner's threads (with ``env`` added to the environment) with its
        output in WORKDIR/logs/NAME.log.

        Returns the run's provenance: command, commit, wall and CPU seconds, peak load and
        peak resident memory of this invocation and, summed with the invocations of NAME
        that were stopped before they finished (WORKDIR/progress/NAME.json, written every
        15 s), of all of them (``wall_total_s``, ``cpu_total_s``, ``shared``). A failed run
        exits with the log's tail.
        """
        threads, env = self.threads, dict(env or {})
        environment = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                           PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore", **env)
        for folder in ("logs", "progress"):
            (self.workdir / folder).mkdir(exist_ok=True)
        log_path = self.workdir / "logs" / f"{name}.log"
        progress_path = self.workdir / "progress" / f"{name}.json"
        earlier = json.loads(progress_path.read_text()) if progress_path.exists() else []
        log(f"{name}: {shlex.join(cmd)[:300]} (log {log_path})")
        started, loads, stop = time.time(), [], threading.Event()
        with open(log_path, "a") as out:
            header = shlex.join(cmd).replace("\n", "\\n")  # one line, where :meth:`output` starts
            out.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {header}\n")
            out.flush()
            child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=environment,
                                     cwd=REPO)

            def invocation(cpu):
                peak = max(loads) if loads else None
                return {"wall_s": round(time.time() - started, 1), "cpu_s": round(cpu, 1),
                        "peak_load": peak,
                        # the run's own threads plus some rounding of the 1-minute average
                        "shared": peak is not None and peak > threads + 0.75}

            def sample():
                while not stop.wait(15):
                    loads.append(os.getloadavg()[0])
                    progress_path.write_text(json.dumps(earlier + [invocation(process_cpu(child.pid))]))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            # this child's own usage (and its waited-for children's): right when runs overlap
            _, status, usage = os.wait4(child.pid, 0)
            code = child.returncode = os.waitstatus_to_exitcode(status)
            stop.set()
            sampler.join()
        if code != 0:
            lines = log_path.read_text(errors="replace").splitlines()[-30:]
            raise SystemExit(f"{name} failed (exit {code}); {log_path}:\n" + "\n".join(lines))
        this = invocation(usage.ru_utime + usage.ru_stime)
        every = earlier + [this]
        progress_path.unlink(missing_ok=True)
        prefix = "".join(f"{k}={v} " for k, v in env.items())
        return {"command": f"{prefix}OMP_NUM_THREADS={threads} " + shlex.join(cmd), "commit": self.commit, **this,
                "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "invocations": len(every),
                "wall_total_s": round(sum(i["wall_s"] for i in every), 1),
                "cpu_total_s": round(sum(i["cpu_s"] for i in every), 1),
                "shared": any(i["shared"] for i in every), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}

    def output(self, name):
        """The output of the last invocation of run NAME (its log after the last header;
        empty when it never ran)."""
        path = self.workdir / "logs" / f"{name}.log"
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return re.split(r"^# \d{4}-\d\d-\d\d \d\d:\d\d:\d\d .*$", text, flags=re.M)[-1]

    def run_together(self, jobs):
        """{name: cmd} run at the same time (each as :meth:`run`), as many at once as the
        machine has cores for their threads; {name: provenance}."""
        at_once = max(1, (os.cpu_count() or 1) // self.threads)
        with ThreadPoolExecutor(min(at_once, max(1, len(jobs)))) as pool:
            futures = {name: pool.submit(self.run, name, cmd) for name, cmd in jobs.items()}
            return {name: future.result() for name, future in futures.items()}


def process_cpu(pid):
    """User + system CPU seconds a running process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------- data
def slice_corpus(raw, destination, limits):
    """The first ``limits[NAME]`` lines (None: all) of both sides of each raw file NAME,
    written to ``destination`` in the same layout."""
    for name, limit in limits.items():
        for lang in (SRC, TGT):
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            with open(raw / f"{name}.{lang}", encoding="utf-8") as f:
                head = list(itertools.islice(f, limit))
            (destination / f"{name}.{lang}").write_text("".join(head), encoding="utf-8")


def encode_lines(spm_model, sources, destination):
    """Each line of the files ``sources`` as sentencepiece pieces, into ``destination``."""
    import sentencepiece

    model = sentencepiece.SentencePieceProcessor(model_file=str(spm_model))
    with open(destination, "w", encoding="utf-8") as out:
        for source in sources:
            with open(source, encoding="utf-8") as f:
                lines = [line.strip() for line in f]
            out.writelines(" ".join(pieces) + "\n" for pieces in model.encode(lines, out_type=str))


def prepare_translation(runner, raw, prompted, text, unprompted, template, vocab_size, workers=None):
    """Multi30k de->en binarized twice with one sentencepiece model and dictionary:
    prompted for the plugin (scripts/prepare_prompted.py, which trains the model, into
    ``prompted``) and as plain pairs for fairseq's models (:func:`binarize_unprompted`).
    Returns the runs' provenance."""
    workers = ["--workers", str(workers)] if workers else []
    prepared = runner.run("prepare", [
        sys.executable, str(REPO / "scripts" / "prepare_prompted.py"),
        "--source-lang", SRC, "--target-lang", TGT,
        "--trainpref", str(raw / "train"), "--validpref", str(raw / "val"),
        "--testpref", str(raw / "test_2016_flickr"), "--template", template,
        "--vocab-size", str(vocab_size), "--destdir", str(prompted), *workers,
    ])
    prefixes = {split: raw / name for split, name in RAW_SPLITS.items()}
    unprompted_run = binarize_unprompted(runner, "preprocess_raw", prompted, prefixes, text, unprompted, workers)
    return {"prepare": prepared, "preprocess_raw": unprompted_run}


def binarize_unprompted(runner, name, prompted, prefixes, text, destination, workers=()):
    """Raw parallel files ({split: PREFIX}, PREFIX.de and PREFIX.en) as plain pairs for fairseq's
    models: encoded with the sentencepiece model of the prompted data directory ``prompted``
    into ``text``, binarized with its dictionaries into ``destination``; the run's provenance."""
    text.mkdir(parents=True, exist_ok=True)
    for split, prefix in prefixes.items():
        for lang in (SRC, TGT):
            encode_lines(prompted / "sentencepiece.bpe.model", [Path(f"{prefix}.{lang}")],
                         text / f"{split}.{lang}")
    return runner.run(name, [
        fairseq_cli("fairseq-preprocess"), "--source-lang", SRC, "--target-lang", TGT,
        *[word for split in prefixes for word in (f"--{split}pref", str(text / split))],
        "--srcdict", str(prompted / f"dict.{SRC}.txt"), "--tgtdict", str(prompted / f"dict.{TGT}.txt"),
        "--destdir", str(destination), *workers,
    ])


# ------------------------------------------------------------------ reading
TRANSLATED_RE = re.compile(r"Translated ([\d,]+) sentences .*?\(([\d.]+) sentences/s")
STEPS_RE = re.compile(r"^I-(\d+)\t(\d+)", re.M)


def parse_generate(text):
    """fairseq-generate's output: ``hypotheses`` (id -> detokenized text, the best one),
    ``candidates`` (id -> [[text, target pieces without </s>], ...], best first, with
    --nbest), ``sentences_per_second`` and ``mean_steps`` (of the plugin's --print-step)."""
    hypotheses, candidates = {}, {}
    for line in text.splitlines():
        fields = line.split("\t")
        if line.startswith("D-"):
            hypotheses.setdefault(fields[0][2:], fields[2] if len(fields) > 2 else "")
            candidates.setdefault(fields[0][2:], []).append([fields[2] if len(fields) > 2 else "", None])
        elif line.startswith("P-"):
            candidates[fields[0][2:]][-1][1] = len(fields[1].split()) - 1
    speed = TRANSLATED_RE.findall(text)
    steps = [int(s) for _, s in STEPS_RE.findall(text)]
    return {
        "hypotheses": hypotheses,
        "candidates": candidates,
        "sentences_per_second": float(speed[-1][1]) if speed else None,
        "mean_steps": sum(steps) / len(steps) if steps else None,
    }


def table(header, rows, notes=(), align=None):
    """A markdown table, then each note as a paragraph; ``align``: one ``l`` or ``r`` a column."""
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in (align or "l" * len(header)))
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "".join(f"\n\n{note}" for note in notes)
