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
master copy: 2 + 2 + 8. It is an estimate: compare it with the peak memory that
scripts/gpu_check.py measures.

    python scripts/plan_memory.py --arch diffusion_xlmr_xxl --gpus 8 --ddp-backend fully_sharded \\
        --precision bf16 --checkpoint-activations --max-tokens 2048 --gpu-memory 80
"""

from types import SimpleNamespace
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import ARCH_CONFIG_REGISTRY

import diffusion_plugin.models.diffusion_xlmr  # noqa: F401  (registers the architectures)

GIB = 1024**3
XLMR_VOCABULARY = 250002
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


def architecture(arch):
    """The defaults fairseq's registered ``arch`` function sets: a namespace."""
    args = SimpleNamespace()
    ARCH_CONFIG_REGISTRY[arch](args)
    return args


def transformer_layer_params(hidden, ffn):
    """One post- or pre-LN transformer layer: attention (4 projections), FFN, two LayerNorms."""
    return 4 * (hidden * hidden + hidden) + 2 * hidden * ffn + ffn + hidden + 2 * 2 * hidden


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
        heads += transformer_layer_params(hidden, ffn) + hidden * ffn + ffn + ffn * classes + classes
    return {"embeddings": embeddings, "layers": layers, "heads": heads}


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
    param_b, grad_b, optim_b = optimizer_bytes(opts.precision, opts.ddp_backend, opts.memory_efficient)
    shards = opts.gpus if fsdp else 1
    gathered = 0
    if fsdp:
        gathered_element = 2 if opts.precision == "fp16" else 4
        one_layer = parts["layers"] // args.encoder_layers
        gathered = gathered_element * (parts["embeddings"] + parts["heads"] + 2 * one_layer)
    memory = {
        "parameters": param_b * total / shards,
        "gradients": grad_b * total / shards,
        "optimizer": optim_b * total / shards,
        "gathered": gathered,
        "activations": activation_bytes(args, opts),
        "overhead": opts.overhead_gib * GIB,
    }
    gib = {key: value / GIB for key, value in memory.items()}
    gib["total"] = sum(gib.values())
    return {"arch": arch, "params": total, "parts": parts, "gib": gib,
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
            f"{opts.length_predictor} length predictor")


def table(rows):
    """A markdown table of :func:`plan`'s estimates."""
    columns = ["parameters", "gradients", "optimizer", "gathered", "activations", "overhead", "total"]
    lines = ["| arch | params | " + " | ".join(columns) + " | fits |",
             "|---|---:|" + "---:|" * len(columns) + "---|"]
    for row in rows:
        cells = " | ".join(f"{row['gib'][c]:.1f}" for c in columns)
        lines.append(f"| {row['arch']} | {row['params'] / 1e9:.3f}B | {cells} | "
                     f"{'yes' if row['fits'] else 'no'} |")
    return "\n".join(lines)
