#!/usr/bin/env python3
"""One training-throughput measurement, in its own process (bench_speed.py --mode throughput runs one
per row, so that each row's peak memory is its own).

Builds fairseq's own Trainer from fairseq-train arguments, as fairseq_cli/train.py does, runs
``--warmup`` updates, then times ``--updates`` updates of fairseq's ``trainer.train_step``, then
counts the FLOPs of ``--flop-updates`` more updates (every matmul and attention of their forwards
and backwards, by shape, with torch's FlopCounterMode, per target token of those batches), and
with ``--profile`` records further updates with torch's profiler, sorted into where the time goes.
Prints one JSON line.

    python -m benchmarks.train_worker --updates 20 --warmup 3 [--profile 5] [--variant V ...] -- FAIRSEQ-TRAIN-ARGS
"""

import argparse
import json
import logging
import sys
import time
from collections import defaultdict

from benchmarks.measuring import count_flops
from benchmarks.variants import TRAINING_VARIANTS

# op name -> category of the profile; the first pattern an op contains decides
CATEGORIES = (
    ("attention", ("scaled_dot_product", "_softmax_backward", "aten::_softmax", "baddbmm")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")),
    ("loss: log-softmax, NLL", ("log_softmax", "nll_loss", "cross_entropy", "aten::gather")),
    ("layer norm", ("layer_norm",)),
    ("activation, dropout", ("gelu", "relu", "dropout", "bernoulli", "native_dropout")),
    ("dtype casts", ("aten::copy_", "aten::_to_copy", "aten::to")),
    ("embedding, indexing", ("embedding", "index", "masked", "nonzero", "scatter", "where", "cat")),
    ("elementwise", ("aten::add", "aten::mul", "aten::div", "aten::sub", "aten::sqrt", "addcmul",
                     "addcdiv", "lerp", "aten::sum", "aten::norm", "aten::mean", "aten::clamp",
                     "aten::fill_", "aten::zero_", "aten::ne", "aten::eq", "aten::lt", "aten::ge")),
)
REGIONS = ("data", "forward", "backward", "optimizer", "clip-grads")
OVERHEAD = "Python and dispatch overhead"


def build_trainer(train_args, variants=()):
    """fairseq's Trainer, epoch iterator and model for ``fairseq-train`` arguments, the
    model made into each of ``variants`` (names of benchmarks/variants.py's TRAINING_VARIANTS)."""
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    args = options.parse_args_and_arch(options.get_training_parser(), input_args=train_args)
    cfg = convert_namespace_to_omegaconf(args)
    utils.import_user_module(cfg.common)
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train", combine=False, epoch=1)
    model = task.build_model(cfg.model)
    for variant in variants:
        TRAINING_VARIANTS[variant](model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    return trainer, trainer.get_train_iterator(epoch=1, load_dataset=False), model


class Batches:
    """Endless batches of the epoch iterator, each timed (data loading and collation)."""

    def __init__(self, epoch_itr):
        self.epoch_itr, self.itr, self.seconds = epoch_itr, None, 0.0

    def next(self):
        import torch

        with torch.autograd.profiler.record_function("data"):
            start = time.perf_counter()
            sample = None
            while not sample:
                if self.itr is None or not self.itr.has_next():
                    self.itr = self.epoch_itr.next_epoch_itr(shuffle=True)
                sample = next(self.itr)
            self.seconds += time.perf_counter() - start
        return sample


def category(name):
    """The profile's category of an op other than a region itself (CATEGORIES first)."""
    if name.startswith(("autograd::engine", "torch::autograd")):
        return "autograd engine"
    if name.startswith(("aten::", "Optimizer")):
        return next((label for label, patterns in CATEGORIES if any(p in name for p in patterns)), "other ops")
    return OVERHEAD


def region(event):
    while event is not None:
        if event.name in REGIONS:
            return event.name
        event = event.cpu_parent
    return "trainer (other)"


def profile(trainer, batches, updates):
    """Seconds by region (data, forward, backward, optimizer, ...) and, outside the data,
    optimizer and clip-grads regions, by op category (forward and backward: fairseq's
    translation_lev, CMLM's task, labels neither in its train_step, so its forward and
    backward are "trainer (other)"); time inside a region but in no op is Python overhead."""
    import torch

    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            trainer.train_step([batches.next()])
    wall = time.perf_counter() - start
    regions, categories = defaultdict(float), defaultdict(float)
    for event in prof.events():
        seconds, where = event.self_cpu_time_total / 1e6, region(event)
        regions[where] += seconds
        if where not in ("data", "optimizer", "clip-grads"):
            categories[OVERHEAD if event.name in REGIONS else category(event.name)] += seconds
    regions["trainer (other)"] = wall - sum(v for k, v in regions.items() if k != "trainer (other)")
    return {"wall_seconds": wall, "updates": updates, "regions": regions, "forward_backward": categories}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--updates", type=int, default=20, help="timed updates")
    add("--warmup", type=int, default=3, help="untimed updates first")
    add("--flop-updates", type=int, default=4, help="updates (batches) whose FLOPs are counted after the timed ones")
    add("--profile", type=int, default=0, help="updates recorded by the profiler")
    add("--variant", choices=sorted(TRAINING_VARIANTS), action="append", default=[],
        help="a slower variant of the plugin's model (benchmarks/variants.py); repeat for several")
    add("train_args", nargs=argparse.REMAINDER, help="fairseq-train arguments")
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    logging.disable(logging.WARNING)

    import torch

    trainer, epoch_itr, model = build_trainer(train_args, args.variant)
    batches = Batches(epoch_itr)
    for _ in range(args.warmup):
        trainer.train_step([batches.next()])
    batches.seconds, tokens, losses = 0.0, 0, []
    start = time.perf_counter()
    for _ in range(args.updates):
        sample = batches.next()
        tokens += int(sample["ntokens"])
        logs = trainer.train_step([sample])
        losses.append(float(logs["loss"]) if logs else float("nan"))
    seconds = time.perf_counter() - start
    counted = [batches.next() for _ in range(args.flop_updates)]
    flops = count_flops(lambda sample: trainer.train_step([sample]), counted)  # forwards and backwards
    result = {
        "target_tokens_per_second": tokens / seconds,
        "seconds_per_update": seconds / args.updates,
        "data_seconds_per_update": batches.seconds / args.updates,
        "target_tokens_per_update": tokens / args.updates,
        "flops_per_target_token": flops / sum(int(sample["ntokens"]) for sample in counted),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "threads": torch.get_num_threads(),
        "losses": losses,
    }
    result["gflops_per_second"] = result["flops_per_target_token"] * result["target_tokens_per_second"] / 1e9
    if args.profile:
        result["profile"] = profile(trainer, batches, args.profile)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
