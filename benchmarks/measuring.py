"""Measuring decoding, shared by the speed benchmarks: test batches, precision, FLOPs by
shape, timed decoding, matmul peaks and the machine's description."""

import os
import platform
import re
import time
import timeit
from contextlib import contextmanager, suppress
from pathlib import Path


def load_model(data, checkpoint, split="test", **overrides):
    """(network in eval mode, task with ``split`` loaded) of a fairseq checkpoint over ``data``
    (and the task's ``overrides``)."""
    from fairseq import checkpoint_utils

    import diffusion_plugin  # noqa: F401  (its components, and the globals fairseq checkpoints hold)

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)],
                                                                    arg_overrides={"data": str(data), **overrides})
    task.load_dataset(split)
    return models[0].eval(), task


def build_generator(model_name, network, task, options, max_len_b=200):
    """fairseq's SequenceGenerator (``transformer``), IterativeRefinementGenerator
    (``cmlm``) or the plugin's generator (benchmarks/variants.py's MeasuredGenerator),
    with ``options`` (``beam`` for the transformer, generator keywords otherwise)."""
    from fairseq.iterative_refinement_generator import IterativeRefinementGenerator
    from fairseq.sequence_generator import SequenceGenerator

    from benchmarks.variants import MeasuredGenerator

    dictionary = task.target_dictionary
    if model_name == "transformer":
        return SequenceGenerator([network], dictionary, beam_size=options["beam"],
                                 max_len_a=options.get("max_len_a", 0),
                                 max_len_b=options.get("max_len_b", max_len_b))
    if model_name == "cmlm":
        return IterativeRefinementGenerator(dictionary, models=[network], eos_penalty=0.0, adaptive=True, **options)
    max_positions = min(task.max_positions(), network.max_positions())
    return MeasuredGenerator(dictionary, max_positions=max_positions, **options)


def test_batches(args, task):
    """(latency samples of one sentence, throughput batches, FLOP-count batches)."""
    dataset = task.dataset("test")
    count = min(len(dataset), args.test_lines or len(dataset))
    ordered = [int(i) for i in dataset.ordered_indices() if i < count]
    spread = list(range(0, count, max(1, count // args.flop_sentences)))[: args.flop_sentences]

    def collated(indices, size):
        return [dataset.collater([dataset[i] for i in indices[start:start + size]])
                for start in range(0, len(indices), size)]

    return (collated(range(min(args.latency_sentences, count)), 1),
            collated(ordered, args.batch_size), collated(spread, args.batch_size))


@contextmanager
def precision(network, bf16):
    """Inside the block a diffusion model runs in fp32, or under bf16 autocast when
    ``bf16`` (its ``bf16_autocast`` option, which a checkpoint trained with --bf16-autocast has on)."""
    cfg = getattr(network, "cfg", None)
    if not hasattr(cfg, "bf16_autocast"):
        yield
        return
    saved, cfg.bf16_autocast = cfg.bf16_autocast, bf16
    try:
        yield
    finally:
        cfg.bf16_autocast = saved


def count_flops(step, items):
    """FLOPs of ``step(item)`` for every item, summed: every matmul and attention (CPU flash
    attention's forward and backward too), by shape, with torch's FlopCounterMode."""
    import torch
    from torch.utils import flop_counter

    def forward(query, key, value, *args, out_shape=None, **kwargs):  # shapes, not tensors
        return flop_counter.sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)

    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: forward,
               aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}
    with flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        for item in items:
            step(item)
    return counter.get_total_flops()


def timed(generator, network, batches):
    """(seconds, hypotheses by sentence id) of decoding every batch in turn."""
    hypotheses, seconds = {}, 0.0
    for sample in batches:
        start = time.perf_counter()
        output = generator.generate([network], sample)
        seconds += time.perf_counter() - start
        for sentence_id, hypos in zip(sample["id"].tolist(), output):
            hypotheses[sentence_id] = hypos[0]["tokens"]
    return seconds, hypotheses


def matmul_peaks(threads, size=2048, repeats=5):
    """Best GFLOP/s of a size x size torch.matmul in fp32 and bf16."""
    import torch

    torch.set_num_threads(threads)
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        torch.matmul(a, b)
        best = min(timeit.repeat(lambda: torch.matmul(a, b), number=1, repeat=repeats))
        peaks[name] = 2 * size**3 / best / 1e9
    return peaks


def measure(row, network, generator, batches, references, dictionary):
    """One row's numbers: BLEU (translation rows), latency, throughput, GFLOP/s."""
    import sacrebleu

    latency_batches, throughput_batches, flop_batches = batches
    reset_peak_rss()
    with precision(network, row.bf16):
        timed(generator, network, latency_batches[:1])
        latency_seconds, _ = timed(generator, network, latency_batches)
        seconds, hypotheses = timed(generator, network, throughput_batches)
        flops = count_flops(lambda sample: generator.generate([network], sample), flop_batches)
    sentences_per_second = len(hypotheses) / seconds
    flops_per_sentence = flops / sum(int(sample["nsentences"]) for sample in flop_batches)
    result = {
        "latency_ms": 1000 * latency_seconds / len(latency_batches),
        "sentences_per_second": sentences_per_second,
        "gflops_per_second": flops_per_sentence * sentences_per_second / 1e9,
        "peak_rss_mib": peak_rss_mib(),
    }
    if references is not None:
        texts = [dictionary.string(hypotheses[i], "sentencepiece") for i in sorted(hypotheses)]
        result["bleu"] = sacrebleu.corpus_bleu(texts, [[references[i] for i in sorted(hypotheses)]]).score
    return result


def reset_peak_rss():
    """Start this process's resident-memory high-water mark afresh (Linux: clear_refs 5)."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib():
    """This process's peak resident memory (VmHWM) since the last reset, in MiB."""
    status = Path("/proc/self/status")
    found = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.exists() else None
    return int(found.group(1)) / 1024 if found else float("nan")


def machine(threads):
    """The CPU model, core and thread counts, torch's and Python's versions."""
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text()) if cpuinfo.exists() else []
    return (f"{names[0] if names else platform.processor()}, {os.cpu_count()} logical CPUs, "
            f"{threads} torch thread(s), torch {torch.__version__}, Python {platform.python_version()}")
