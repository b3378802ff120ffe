"""
Per-GPU training memory of a diffusion_xlmr architecture under a parallel setup.

Parameters are counted analytically from the architecture's own defaults (the
function fairseq registered for ``--arch``), and the count equals the built model's
(tests/test_plan_memory.py). Memory per GPU, in GiB:

- parameters, gradients, optimizer state (Adam: two fp32 moments). DDP keeps them
  whole on every GPU; FSDP (``--ddp-backend fully_sharded``) shards them over the GPUs
  and adds the full weights it gathers while computing: everything outside the layers
  (embeddings, LM head, length head) for the whole step, plus two layers (the one
  running and the one prefetched).
- activations: per layer and token, ``(8e+2)H + 2eF`` bytes plus ``(2e+1)A*S`` for the
  attention maps (Korthikanti et al., 2022, generalised to element size ``e``, FFN size
  F, A heads, sequence length S), times ``1 + prompt_fraction`` for the joint length
  head's prompt-only pass. With activation checkpointing only each layer's input
  (``eH`` per token; nothing with offload) stays, plus one layer's activations while
  it is recomputed. The LM head adds three fp32 ``V``-wide rows (logits, log-softmax,
  gradient) per scored token.
- a fixed overhead for the CUDA context, kernels and the allocator's fragmentation.

Precisions and what they keep per parameter (bytes; the fairseq flags in brackets):

| precision | DDP | FSDP |
|---|---|---|
| fp32 | 4 + 4 + 8 | (4 + 4 + 8) / G, gathered in fp32 |
| fp16 (--fp16) | 2 + 2 + 4 master + 4 master grad + 8 | (4 + 4 + 8) / G, gathered in fp16 |
| bf16 (DDP: --bf16; FSDP: --bf16-autocast autocast) | as fp16 | (4 + 4 + 8) / G, gathered in fp32 |

``--memory-efficient`` (--memory-efficient-fp16/-bf16, DDP only) drops the fp32
master copy: 2 + 2 + 8.

With LoRA (``--lora-rank R``, DDP only: the model refuses FSDP) the frozen weights keep
their parameter bytes alone, and only the trainable parameters (the adapters,
``R * (in + out)`` per adapted projection, the joint length head and, with
``--lora-train-embeddings``, the embeddings) have gradients and optimizer state; the
adapters' own activations are not counted. ``--smallest-gpus`` prints, per size, the
fewest GPUs that fit full fine-tuning under FSDP and LoRA under DDP. It is an estimate: compare it with the peak memory that
scripts/gpu_check.py measures.

    python scripts/plan_memory.py --arch diffusion_xlmr_xxl --gpus 8 --ddp-backend fully_sharded \\
        --precision bf16 --checkpoint-activations --max-tokens 2048 --gpu-memory 80
"""

import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import ARCH_CONFIG_REGISTRY

import diffusion_plugin.models.diffusion_xlmr  # noqa: F401  (registers the architectures)
from diffusion_plugin.modules.lora import DEFAULT_MODULES, lora_module_names

GIB = 1024**3
XLMR_VOCABULARY = 250002
GPU_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ARCHS = ["diffusion_xlmr_tiny", "diffusion_xlmr_base", "diffusion_xlmr_large",
         "diffusion_xlmr_xl", "diffusion_xlmr_xxl"]


@dataclass
class MemorySetup(FairseqDataclass):
    """The parallel setup :func:`plan` estimates (scripts/plan_memory.py's options)."""

    vocab_size: int = field(default=XLMR_VOCABULARY, metadata={
        "help": "dictionary size (XLM-R: 250002; a pruned task dictionary is smaller)"})
    untie_weights_roberta: bool = field(default=False, metadata={
        "help": "a separate LM-head projection (as with --pretrained-vocab prune)"})
    length_predictor: ChoiceEnum(["joint", "separate"]) = field(default="joint", metadata={
        "help": "the model's --length-predictor"})
    gpus: int = field(default=8, metadata={"help": "GPUs in data parallel (all nodes)"})
    ddp_backend: ChoiceEnum(["fully_sharded", "c10d"]) = field(default="fully_sharded", metadata={
        "help": "FSDP or plain DDP"})
    precision: ChoiceEnum(["fp32", "fp16", "bf16"]) = field(default="bf16", metadata={
        "help": "training precision (see the table in the docstring)"})
    memory_efficient: bool = field(default=False, metadata={
        "help": "--memory-efficient-fp16/-bf16 (DDP only): no fp32 master weights"})
    checkpoint_activations: bool = field(default=False, metadata={
        "help": "recompute each layer's activations in the backward"})
    offload_activations: bool = field(default=False, metadata={
        "help": "keep the checkpointed layer inputs in CPU memory"})
    max_tokens: int = field(default=2048, metadata={
        "help": "tokens per GPU per forward pass (fairseq's --max-tokens)"})
    seq_len: int = field(default=256, metadata={
        "help": "typical <s> prompt target </s> length (the attention-map term)"})
    prompt_fraction: float = field(default=0.5, metadata={
        "help": "share of the tokens in the prompt (the joint length head re-reads it)"})
    scored_fraction: float = field(default=0.5, metadata={
        "help": "share of the tokens the LM head scores (masked targets)"})
    overhead_gib: float = field(default=3.0, metadata={"help": "CUDA context, kernels and fragmentation per GPU"})
    gpu_memory: float = field(default=80.0, metadata={"help": "memory of one GPU in GiB (H100/A100 80GB: 80)"})
    lora_rank: int = field(default=0, metadata={
        "help": "the model's --lora-rank: only the adapters are trained (0: full)"})
    lora_modules: str = field(default=DEFAULT_MODULES, metadata={"help": "the model's --lora-modules"})
    lora_train_embeddings: bool = field(default=False, metadata={
        "help": "the model's --lora-train-embeddings"})


def architecture(arch):
    """The defaults fairseq's registered ``arch`` function sets: a namespace."""
    args = SimpleNamespace()
    ARCH_CONFIG_REGISTRY[arch](args)
    return args


def transformer_layer_params(hidden, ffn):
    """One post- or pre-LN transformer layer: attention (4 projections), FFN, two LayerNorms."""
    return 4 * (hidden * hidden + hidden) + 2 * hidden * ffn + ffn + hidden + 2 * 2 * hidden


def separate_predictor_params(hidden, ffn, classes):
    """The separate length predictor: one transformer layer and a two-layer MLP."""
    return transformer_layer_params(hidden, ffn) + hidden * ffn + ffn + ffn * classes + classes


def count_parameters(args, vocab_size, untied, length_predictor):
    """Parameters by part: {"embeddings", "layers", "heads"} for a diffusion_xlmr model.

    ``layers`` are the transformer layers (FSDP wraps each one); the rest stays in the
    root FSDP unit.
    """
    hidden, ffn, classes = args.encoder_embed_dim, args.encoder_ffn_embed_dim, args.length_classes
    # learned positions: max_positions + padding_idx (1) + 1 rows
    embeddings = vocab_size * hidden + (args.max_positions + 2) * hidden
    if args.layernorm_embedding:
        embeddings += 2 * hidden
    layers = args.encoder_layers * transformer_layer_params(hidden, ffn)
    heads = 2 * hidden if args.encoder_normalize_before else 0
    heads += hidden * hidden + hidden + 2 * hidden + vocab_size  # LM head: dense, LayerNorm, bias
    if untied:
        heads += vocab_size * hidden
    if length_predictor == "joint":
        heads += hidden * classes + classes  # the joint length head
    else:  # the separate predictor, which replaces it
        heads += separate_predictor_params(hidden, ffn, classes)
    return {"embeddings": embeddings, "layers": layers, "heads": heads}


def trainable_parameters(args, parts, vocab_size, untied, length_predictor, rank, modules,
                         train_embeddings):
    """(adapter parameters, trained parameters) with LoRA of ``rank`` on ``modules``
    (comma-separated); without LoRA (rank 0) every parameter is trained. ``parts``:
    :func:`count_parameters`'s."""
    if rank == 0:
        return 0, sum(parts.values())
    hidden, ffn, classes = args.encoder_embed_dim, args.encoder_ffn_embed_dim, args.length_classes
    shapes = {"q_proj": (hidden, hidden), "k_proj": (hidden, hidden), "v_proj": (hidden, hidden),
              "out_proj": (hidden, hidden), "fc1": (hidden, ffn), "fc2": (ffn, hidden)}
    adapters = args.encoder_layers * sum(rank * sum(shapes[m]) for m in lora_module_names(modules))
    if length_predictor == "separate":  # stage two trains the predictor alone
        return adapters, separate_predictor_params(hidden, ffn, classes)
    trained = adapters + hidden * classes + classes
    if train_embeddings:
        trained += vocab_size * hidden * (2 if untied else 1) + vocab_size
    return adapters, trained


def optimizer_bytes(precision, backend, memory_efficient):
    """(parameter, gradient, optimizer-state) bytes per parameter, before sharding."""
    if backend == "fully_sharded" or precision == "fp32":
        return 4, 4, 8
    if memory_efficient:
        return 2, 2, 8
    return 2, 2, 4 + 4 + 8  # fp32 master weights and their gradients


def activation_bytes(args, opts):
    """Activation memory of one GPU's forward-backward, in bytes."""
    element = 4 if opts.precision == "fp32" else 2
    hidden, ffn = args.encoder_embed_dim, args.encoder_ffn_embed_dim
    tokens = opts.max_tokens * (1 + opts.prompt_fraction)
    per_token_layer = (8 * element + 2) * hidden + 2 * element * ffn + (
        (2 * element + 1) * args.encoder_attention_heads * opts.seq_len
    )
    if opts.checkpoint_activations:
        kept_inputs = 0 if opts.offload_activations else args.encoder_layers * element * hidden
        layers = tokens * (kept_inputs + per_token_layer)
    else:
        layers = tokens * args.encoder_layers * per_token_layer
    lm_head = opts.max_tokens * opts.scored_fraction * 3 * 4 * opts.vocab_size
    return layers + lm_head


def plan(arch, opts: MemorySetup):
    """Memory estimate of ``arch`` under ``opts``: a dict."""
    if opts.offload_activations and not opts.checkpoint_activations:
        raise ValueError("--offload-activations needs --checkpoint-activations")
    args = architecture(arch)
    parts = count_parameters(args, opts.vocab_size, opts.untie_weights_roberta, opts.length_predictor)
    total = sum(parts.values())
    fsdp = opts.ddp_backend == "fully_sharded"
    if opts.memory_efficient and fsdp:
        raise ValueError("--memory-efficient is a DDP option; FSDP shards the fp32 weights instead")
    if opts.lora_rank > 0 and fsdp:
        raise ValueError("--lora-rank trains under --ddp-backend c10d (or legacy_ddp); the model "
                         "refuses fully_sharded")
    adapters, trained = trainable_parameters(
        args, parts, opts.vocab_size, opts.untie_weights_roberta, opts.length_predictor,
        opts.lora_rank, opts.lora_modules, opts.lora_train_embeddings)
    total += adapters
    param_b, grad_b, optim_b = optimizer_bytes(opts.precision, opts.ddp_backend, opts.memory_efficient)
    shards = opts.gpus if fsdp else 1
    gathered = 0
    if fsdp:
        gathered_element = 2 if opts.precision == "fp16" else 4
        one_layer = parts["layers"] // args.encoder_layers
        gathered = gathered_element * (parts["embeddings"] + parts["heads"] + 2 * one_layer)
    memory = {
        "parameters": param_b * total / shards,
        "gradients": grad_b * trained / shards,
        "optimizer": optim_b * trained / shards,
        "gathered": gathered,
        "activations": activation_bytes(args, opts),
        "overhead": opts.overhead_gib * GIB,
    }
    gib = {key: value / GIB for key, value in memory.items()}
    gib["total"] = sum(gib.values())
    return {"arch": arch, "params": total, "trainable": trained, "parts": parts, "gib": gib,
            "fits": gib["total"] <= opts.gpu_memory}


def setup_line(opts: MemorySetup):
    """The setup in one line (the table's caption)."""
    backend = "FSDP" if opts.ddp_backend == "fully_sharded" else "DDP"
    extras = [name for name, on in (("activation checkpointing", opts.checkpoint_activations),
                                    ("offloaded", opts.offload_activations),
                                    ("memory-efficient", opts.memory_efficient)) if on]
    return (f"{opts.gpus} GPUs x {opts.gpu_memory:g} GiB, {backend}, {opts.precision}"
            f"{', ' + ', '.join(extras) if extras else ''}; {opts.max_tokens} tokens per GPU, "
            f"sequence length {opts.seq_len}, vocabulary {opts.vocab_size:,}"
            f"{' (untied)' if opts.untie_weights_roberta else ''}, "
            f"{opts.length_predictor} length predictor"
            f"{f', LoRA rank {opts.lora_rank}' if opts.lora_rank else ''}")


def table(rows):
    """A markdown table of :func:`plan`'s estimates."""
    columns = ["parameters", "gradients", "optimizer", "gathered", "activations", "overhead", "total"]
    lines = ["| arch | params | trainable | " + " | ".join(columns) + " | fits |",
             "|---|---:|---:|" + "---:|" * len(columns) + "---|"]
    for row in rows:
        cells = " | ".join(f"{row['gib'][c]:.1f}" for c in columns)
        lines.append(f"| {row['arch']} | {row['params'] / 1e9:.3f}B | {row['trainable'] / 1e6:,.1f}M | {cells} | "
                     f"{'yes' if row['fits'] else 'no'} |")
    return "\n".join(lines)


def smallest_gpu_counts(arch, setup: MemorySetup):
    """The fewest GPUs (of GPU_COUNTS) that fit ``arch``: {"full": under FSDP, "lora": with
    ``--lora-rank`` (16 if 0) under DDP, where every GPU holds the whole model}; None: none."""
    full = dataclasses.replace(setup, lora_rank=0, ddp_backend="fully_sharded", memory_efficient=False)
    lora = dataclasses.replace(setup, lora_rank=setup.lora_rank or 16, ddp_backend="c10d", gpus=1)
    counts = {"full": next((n for n in GPU_COUNTS
                            if plan(arch, dataclasses.replace(full, gpus=n))["fits"]), None)}
    lora_plan = plan(arch, lora)
    counts["lora"] = 1 if lora_plan["fits"] else None
    counts["lora_trainable"] = lora_plan["trainable"]
    return counts


def smallest_gpus_table(archs, setup: MemorySetup):
    """A markdown table of :func:`smallest_gpu_counts` for each of ``archs``."""
    rank = setup.lora_rank or 16
    lines = [f"| arch | full fine-tuning (FSDP): GPUs | LoRA rank {rank} (DDP): GPUs | LoRA trainable |",
             "|---|---:|---:|---:|"]
    for arch in archs:
        counts = smallest_gpu_counts(arch, setup)
        full = str(counts["full"]) if counts["full"] else f"more than {GPU_COUNTS[-1]}"
        lora = "1 (each GPU: the whole model)" if counts["lora"] else "does not fit one GPU"
        lines.append(f"| {arch} | {full} | {lora} | {counts['lora_trainable'] / 1e6:,.1f}M |")
    return "\n".join(lines)
