"""Start N data-parallel fairseq-train workers on this machine (gloo, CPU).

fairseq's own launchers need GPUs (its spawn path starts one process per visible GPU,
its torchrun path divides by the GPU count), so this script only builds the N command
lines of fairseq's manual launch and starts them, one process per rank::

    fairseq-train ARGS --cpu --distributed-world-size N --distributed-rank R
        --distributed-init-method tcp://127.0.0.1:PORT --distributed-backend gloo
        --distributed-no-spawn --ddp-backend legacy_ddp

Training, data sharding and the gradient all-reduce are fairseq's. Rank 0 logs and
saves checkpoints (fairseq silences the other ranks below warnings). Usage::

    OMP_NUM_THREADS=1 python scripts/train_local_workers.py --workers 2 -- \\
        data-bin/quickstart --user-dir diffusion_plugin --task prompted_translation ...

``--ddp-backend c10d`` fails on CPU: fairseq hands ``device_ids=[0]`` to torch's
DistributedDataParallel, which accepts device ids only for GPU modules
(docs/SCALE.md). The exit status is the first failing worker's (the others are
stopped then), or 0.
"""

import argparse
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def owned(arg) -> bool:
    """Whether ``arg`` is a flag this script sets for every rank."""
    name = arg.split("=")[0]
    return name in ("--cpu", "--device-id") or name.startswith("--distributed-")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_commands(fairseq_train, workers, port, train_args):
    """The command line of each rank: a list of N argument lists. A ``--ddp-backend`` in
    ``train_args`` replaces legacy_ddp (fairseq keeps the last one)."""
    taken = [arg for arg in train_args if owned(arg)]
    if taken:
        raise SystemExit(
            f"train_local_workers.py: {taken[0]} is set by this script; drop it from the "
            "fairseq-train arguments (--workers N sets the world size)"
        )
    shared = [
        "--cpu", "--distributed-world-size", str(workers),
        "--distributed-init-method", f"tcp://127.0.0.1:{port}",
        "--distributed-backend", "gloo", "--distributed-no-spawn", "--ddp-backend", "legacy_ddp",
    ]
    return [[fairseq_train, *shared, *train_args, "--distributed-rank", str(rank)] for rank in range(workers)]


def run_workers(commands):
    """Start every command; wait for all; on the first failure stop the rest. Returns the exit status."""
    processes = [subprocess.Popen(command) for command in commands]
    try:
        while True:
            codes = [process.poll() for process in processes]
            failed = [code for code in codes if code not in (None, 0)]
            if failed or all(code == 0 for code in codes):
                return failed[0] if failed else 0
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            process.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, required=True, help="number of ranks (processes)")
    parser.add_argument("--port", type=int, help="rendezvous port on 127.0.0.1 (default: a free one)")
    parser.add_argument(
        "--fairseq-train", help="the fairseq-train executable (default: the one beside this Python)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the command lines, start nothing")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then fairseq-train's arguments")
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if not train_args:
        parser.error("give fairseq-train's arguments after --")
    fairseq_train = args.fairseq_train or str(Path(sys.executable).with_name("fairseq-train"))
    if shutil.which(fairseq_train) is None:
        parser.error(f"--fairseq-train {fairseq_train} is not an executable; install fairseq or name it")
    commands = worker_commands(fairseq_train, args.workers, args.port or free_port(), train_args)
    if args.dry_run:
        for command in commands:
            print(shlex.join(command))
        return 0
    return run_workers(commands)


if __name__ == "__main__":
    sys.exit(main())
