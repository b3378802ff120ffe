"""N data-parallel fairseq-train workers on one machine (gloo, CPU), for
scripts/train_local_workers.py: the command line of each rank of fairseq's manual
launch, and starting them."""

import socket
import subprocess
import time


def owned(arg) -> bool:
    """Whether ``arg`` is a flag set for every rank (not to be given)."""
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
        raise ValueError(
            f"{taken[0]} is set by scripts/train_local_workers.py; drop it from the "
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
