#!/usr/bin/env python3
"""
Progress of a fairseq-train run on the terminal, its whole output in a log file.

Reads fairseq-train's output (``--log-format simple``) on stdin, writes every line to
LOG, and prints one line per training log line (every ``--log-interval`` updates): the
updates done, loss, masked-token accuracy, the time since it started and an estimate of
the time left; one per validation; and, while no log line comes for ``--every`` seconds,
a line saying so, so that a slow machine shows progress too.

    fairseq-train ... --log-format simple --log-interval 25 2>&1 \\
        | python scripts/train_progress.py train.log --max-update 4000
"""

import argparse
import queue
import re
import sys
import threading
import time

NUMBER = r"[-\d.e+]+"
UPDATES = re.compile(r"num_updates[= ](\d+)")


def get_parser():
    parser = argparse.ArgumentParser(description="Show fairseq-train progress; keep its output in LOG.")
    parser.add_argument("log", help="file that receives every line read")
    parser.add_argument("--max-update", type=int, required=True, help="fairseq-train's --max-update")
    parser.add_argument("--minutes", type=float, help="fairseq-train's --stop-time-hours, in minutes")
    parser.add_argument("--every", type=float, default=30.0,
                        help="seconds without a log line after which a line says training goes on")
    return parser


def metric(line, name):
    """The value of ``name`` in a simple-format line (``name=v,`` or ``| name v``), or None."""
    match = re.search(rf"(?:^|[ ,|]){name}[= ]({NUMBER})", line)
    return float(match.group(1)) if match else None


def duration(seconds):
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class Progress:
    """Updates seen so far and the time left they suggest."""

    def __init__(self, max_update, minutes):
        self.max_update, self.minutes = max_update, minutes
        self.started = time.monotonic()
        self.first = None  # (time, updates) of the first training log line
        self.updates = 0

    def elapsed(self):
        return time.monotonic() - self.started

    def left(self):
        """Estimated seconds left: the rate since the first log line (before a second,
        since the start) over the updates still to do, capped by --minutes."""
        if self.updates == 0:
            return None
        since, done = self.first if self.first and self.updates > self.first[1] else (self.started, 0)
        estimate = (time.monotonic() - since) / (self.updates - done) * max(self.max_update - self.updates, 0)
        if self.minutes is not None:
            estimate = min(estimate, max(self.minutes * 60 - self.elapsed(), 0))
        return estimate

    def summary(self):
        left = self.left()
        return f"{duration(self.elapsed())}, {'time left unknown' if left is None else 'about ' + duration(left) + ' left'}"

    def line(self, text):
        """The progress line for one line of fairseq-train's output, or None."""
        if "| train_inner |" in text and UPDATES.search(text):
            self.updates = int(UPDATES.search(text).group(1))
            if self.first is None:
                self.first = (time.monotonic(), self.updates)
            return (f"== update {self.updates}/{self.max_update} | loss {metric(text, 'loss')} | "
                    f"accuracy {metric(text, 'accuracy')}% | {self.summary()}")
        if "| valid |" in text and "valid on" in text:
            return f"== valid at update {self.updates} | loss {metric(text, 'loss')} | accuracy {metric(text, 'accuracy')}%"
        return None


def main(argv=None):
    args = get_parser().parse_args(argv)
    progress = Progress(args.max_update, args.minutes)
    lines = queue.Queue()

    def read():
        for raw in sys.stdin.buffer:
            lines.put(raw.decode("utf-8", errors="replace"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    with open(args.log, "w", encoding="utf-8") as log:
        while True:
            try:
                text = lines.get(timeout=args.every)
            except queue.Empty:
                print(f"== training, {progress.updates}+ updates done, no log line for "
                      f"{args.every:g} s | {progress.summary()}", flush=True)
                continue
            if text is None:
                return
            log.write(text)
            log.flush()
            shown = progress.line(text)
            if shown:
                print(shown, flush=True)


if __name__ == "__main__":
    main()
