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
import sys
from pathlib import Path

from diffusion_plugin.tools.local_workers import free_port, run_workers, worker_commands


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
    try:
        commands = worker_commands(fairseq_train, args.workers, args.port or free_port(), train_args)
    except ValueError as e:
        sys.exit(f"train_local_workers.py: {e}")
    if args.dry_run:
        for command in commands:
            print(shlex.join(command))
        return 0
    return run_workers(commands)


if __name__ == "__main__":
    sys.exit(main())
