"""Measuring decoding, shared by the speed benchmarks: test batches, precision, FLOPs by
shape, timed decoding, matmul peaks and the machine's description."""

import os
import platform
import re
import time
from pathlib import Path


def load_model(data, checkpoint, split="test", **overrides):
    """(network in eval mode, task with ``split`` loaded) of a fairseq checkpoint over ``data``
    (and the task's ``overrides``)."""
    from fairseq import checkpoint_utils

    import diffusion_plugin  # noqa: F401  (its components, and the globals fairseq checkpoints hold)

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data), **overrides}
    )
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
        return IterativeRefinementGenerator(
            dictionary, models=[network], eos_penalty=0.0, adaptive=True, **options
        )
    max_positions = min(task.max_positions(), network.max_positions())
    return MeasuredGenerator(dictionary, max_positions=max_positions, **options)


def collate(task, indices):
    dataset = task.dataset("test")
    return dataset.collater([dataset[i] for i in indices])


def test_batches(args, task):
    """(latency samples of one sentence, throughput batches, FLOP-count batches)."""
    dataset = task.dataset("test")
    count = min(len(dataset), args.test_lines or len(dataset))
    ordered = [int(i) for i in dataset.ordered_indices() if i < count]
    chunks = [ordered[i:i + args.batch_size] for i in range(0, count, args.batch_size)]
    spread = list(range(0, count, max(1, count // args.flop_sentences)))[: args.flop_sentences]
    flop_chunks = [spread[i:i + args.batch_size] for i in range(0, len(spread), args.batch_size)]
    return (
        [collate(task, [i]) for i in range(min(args.latency_sentences, count))],
        [collate(task, chunk) for chunk in chunks],
        [collate(task, chunk) for chunk in flop_chunks],
    )



class Precision:
    """Inside the block a diffusion model runs in fp32, or under bf16 autocast when
    ``bf16`` (its ``bf16_autocast`` option, which a checkpoint trained with --bf16-autocast has on)."""

    def __init__(self, network, bf16):
        self.network, self.bf16 = network, bf16
        self.applies = hasattr(getattr(network, "cfg", None), "bf16_autocast")

    def __enter__(self):
        if self.applies:
            self.saved = self.network.cfg.bf16_autocast
            self.network.cfg.bf16_autocast = self.bf16

    def __exit__(self, *exc):
        if self.applies:
            self.network.cfg.bf16_autocast = self.saved


def count_flops(generator, network, batches):
    """FLOPs per sentence of decoding ``batches``: every matmul and attention, by shape."""
    import torch
    from torch.utils import flop_counter

    def cpu_attention(query, key, value, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_flop_count(query, key, value)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention}
    with flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        for sample in batches:
            generator.generate([network], sample)
    return counter.get_total_flops() / sum(int(s["nsentences"]) for s in batches)


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
        best = min(_time(lambda: torch.matmul(a, b)) for _ in range(repeats))
        peaks[name] = 2 * size**3 / best / 1e9
    return peaks


def _time(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(row, network, generator, batches, references, dictionary):
    """One row's numbers: BLEU (translation rows), latency, throughput, GFLOP/s."""
    import sacrebleu

    latency_batches, throughput_batches, flop_batches = batches
    reset_peak_rss()
    with Precision(network, row.bf16):
        timed(generator, network, latency_batches[:1])
        latency_seconds, _ = timed(generator, network, latency_batches)
        seconds, hypotheses = timed(generator, network, throughput_batches)
        flops = count_flops(generator, network, flop_batches)
    result = {
        "latency_ms": 1000 * latency_seconds / len(latency_batches),
        "sentences_per_second": len(hypotheses) / seconds,
    }
    result["gflops_per_second"] = flops * result["sentences_per_second"] / 1e9
    result["peak_rss_mib"] = peak_rss_mib()
    if references is not None:
        texts = [dictionary.string(hypotheses[i], "sentencepiece") for i in sorted(hypotheses)]
        result["bleu"] = sacrebleu.corpus_bleu(texts, [[references[i] for i in sorted(hypotheses)]]).score
    return result



def reset_peak_rss():
    """Start this process's resident-memory high-water mark afresh (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib():
    """This process's peak resident memory (VmHWM) since the last reset, in MiB."""
    status = Path("/proc/self/status")
    found = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.exists() else None
    return int(found.group(1)) / 1024 if found else float("nan")


def machine(threads):
    import torch

    model_name = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        model_name = names[0] if names else model_name
    return (f"{model_name}, {os.cpu_count()} logical CPUs, {threads} torch thread(s), "
            f"torch {torch.__version__}, Python {platform.python_version()}")


