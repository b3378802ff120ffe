"""
Diffusion language model on an XLM-R (RoBERTa) encoder.

Ye et al., 2023, "Diffusion Language Models Can Perform Many Tasks with Scaling
and Instruction-Finetuning" (arXiv 2308.12219): one sequence
``<s> prompt target </s>``, fully bidirectional attention, positions running on
from the prompt into the target, the masked-LM head scoring only the target
positions that are trained or decoded, and no timestep embedding.
"""

import argparse
import functools
import logging
from dataclasses import dataclass, field, fields
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq import utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.distributed import fsdp_wrap
from fairseq.models import (
    BaseFairseqModel,
    register_model,
    register_model_architecture,
)
from fairseq.models.roberta.model import RobertaEncoder
from fairseq.models.roberta.model import base_architecture as roberta_base_architecture
from fairseq.modules.gelu import gelu as fairseq_gelu
from fairseq.utils import safe_getattr

from diffusion_plugin.constants import MASK_SYMBOL
from diffusion_plugin.hub_interface import from_pretrained
from diffusion_plugin.modules.length_predictor import LengthPredictor
from diffusion_plugin.modules.lora import DEFAULT_MODULES, add_lora, plain_to_lora_keys
from diffusion_plugin.modules.prompt_cache import PromptCache, target_features
from diffusion_plugin.option_ranges import check_ranges

logger = logging.getLogger(__name__)

PRETRAINED_VOCABULARIES = ChoiceEnum(["prune", "full"])
PROMPT_ATTENTIONS = ("full", "prefix")


@dataclass
class DiffusionXLMRConfig(FairseqDataclass):
    encoder_layers: int = field(default=12, metadata={"help": "number of transformer layers"})
    encoder_embed_dim: int = field(default=768, metadata={"help": "hidden size"})
    encoder_ffn_embed_dim: int = field(default=3072, metadata={"help": "feed-forward size"})
    encoder_attention_heads: int = field(default=12, metadata={"help": "attention heads"})
    encoder_normalize_before: bool = field(
        default=False, metadata={"help": "pre-LayerNorm blocks (XLM-R XL/XXL)"}
    )
    layernorm_embedding: bool = field(
        default=True, metadata={"help": "LayerNorm on the embeddings (post-LN XLM-R)"}
    )
    activation_fn: ChoiceEnum(utils.get_available_activation_fns()) = field(
        default="gelu", metadata={"help": "activation function"}
    )
    dropout: float = field(default=0.1, metadata={"help": "dropout probability"})
    attention_dropout: float = field(default=0.1, metadata={"help": "attention dropout"})
    activation_dropout: float = field(default=0.0, metadata={"help": "FFN activation dropout"})
    encoder_layerdrop: float = field(default=0.0, metadata={"help": "LayerDrop probability"})
    max_positions: int = field(
        default=512, metadata={"help": "longest <s> prompt target </s> sequence (XLM-R: 512)"}
    )
    untie_weights_roberta: bool = field(
        default=False,
        metadata={
            "help": "untie the input embedding and the LM-head projection (always untied "
            "with --pretrained-mlm and --pretrained-vocab prune)"
        },
    )
    pretrained_mlm: Optional[str] = field(
        default=None,
        metadata={
            "help": "initialise from a masked LM: a fairseq XLM-R directory (model.pt, "
            "dict.txt), a fairseq RoBERTa checkpoint (fairseq-train --task masked_lm), a "
            "Hugging Face XLM-R / XLM-R-XL directory or a released Diffusion-LLM directory; "
            "read when training starts, not when a checkpoint is loaded (docs/PRETRAINED.md)"
        },
    )
    pretrained_vocab: PRETRAINED_VOCABULARIES = field(
        default="prune",
        metadata={
            "help": "rows of --pretrained-mlm's embeddings and LM head for the task dictionary, "
            "matched by token string. prune (task-specific tuning): symbols it lacks take "
            "<unk>'s row, input and output embeddings untied; full (instruction tuning): the "
            "task dictionary is its vocabulary, every symbol must be found, weights stay tied"
        },
    )
    length_classes: int = field(
        default=512, metadata={"help": "classes of the length head; class k = k+1 target tokens"}
    )
    length_predictor: ChoiceEnum(["joint", "separate"]) = field(
        default="joint",
        metadata={
            "help": "joint: a linear head trained with the diffusion loss (CMLM-style); "
            "separate: the paper's predictor (one transformer layer + MLP over frozen "
            "backbone features), trained alone with --criterion length_prediction "
            "--finetune-from-model DIFFUSION.pt; every other parameter is frozen"
        },
    )
    checkpoint_activations: bool = field(
        default=False, metadata={"help": "recompute each layer's activations in the backward"}
    )
    offload_activations: bool = field(
        default=False, metadata={"help": "offload checkpointed activations to CPU"}
    )
    min_params_to_wrap: int = field(
        default=int(1e8), metadata={"help": "smallest module wrapped by FSDP (fully_sharded)"}
    )
    prompt_attention: ChoiceEnum(PROMPT_ATTENTIONS) = field(
        default="full",
        metadata={
            "help": "full: every position attends to every position (the paper); prefix: "
            "prompt positions attend only to the prompt, in training and decoding, so the "
            "prompt's keys and values can be cached exactly while decoding (--prompt-cache)"
        },
    )
    bf16_autocast: bool = field(
        default=False,
        metadata={
            "help": "run the transformer under bf16 autocast on the device the model is on "
            "(fp32 weights, optimizer and loss): bf16 on CPU, where fairseq's --bf16 needs a "
            "GPU, and on CUDA with --ddp-backend fully_sharded, which fairseq refuses to "
            "combine with --bf16 (docs/SCALE.md); replaces --cpu-bf16 / --cuda-bf16, which "
            "older checkpoints carry"
        },
    )
    bf16_residual: bool = field(
        default=False,
        metadata={
            "help": "with --bf16-autocast, carry the residual stream (each layer's input) in "
            "bf16 instead of fp32: fewer casts and half the activation traffic (faster training "
            "on CPU, docs/SPEED.md), at the cost of rounding the stream at every layer; not "
            "the paper's (docs/DIFFERENCES.md)"
        },
    )

    lora_rank: int = field(
        default=0,
        metadata={
            "help": "rank of LoRA adapters (peft) on --lora-modules of every layer; only the "
            "adapters and the joint length head are trained (0: off, every parameter is trained). "
            "Merge them into a plain checkpoint with scripts/merge_lora.py"
        },
    )
    lora_alpha: float = field(
        default=16.0, metadata={"help": "LoRA scaling numerator: the update is alpha / rank * B A"}
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the adapters' input"})
    lora_modules: str = field(
        default=DEFAULT_MODULES,
        metadata={
            "help": "comma-separated linear projections of each layer that get adapters: the "
            "attention's q_proj,k_proj,v_proj,out_proj and the feed-forward's fc1,fc2"
        },
    )
    lora_train_embeddings: bool = field(
        default=False,
        metadata={
            "help": "with --lora-rank, train the input and output embeddings too (e.g. the rows "
            "of a pruned vocabulary that started from <unk>)"
        },
    )

@register_model("diffusion_xlmr", dataclass=DiffusionXLMRConfig)
class DiffusionXLMRModel(BaseFairseqModel):
    """RoBERTa encoder + LM head as a masked-diffusion denoiser, with a length head.

    The ``joint`` length head is CMLM-style: a linear classifier over the mean of the
    prompt's features from a prompt-only pass, trained with the diffusion loss. With
    ``--length-predictor separate`` the paper's :class:`LengthPredictor` predicts the
    length instead and is the only trainable part.
    """

    def __init__(self, cfg, encoder: RobertaEncoder, dictionary):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.pad = dictionary.pad()
        self.eos = dictionary.eos()
        self.mask = dictionary.index(MASK_SYMBOL)
        for module in encoder.modules():  # the layers (inside any FSDP wrapper) and the LM head
            if getattr(module, "activation_fn", None) is fairseq_gelu:
                module.activation_fn = gelu
        if cfg.length_predictor == "joint":
            self.length_head = nn.Linear(cfg.encoder_embed_dim, cfg.length_classes)
        else:
            for parameter in self.parameters():
                parameter.requires_grad = False
            # its own FSDP unit under --ddp-backend fully_sharded: FSDP flattens the
            # parameters of a unit together and needs them all trainable or all frozen
            self.length_predictor = fsdp_wrap(
                LengthPredictor(
                    cfg.encoder_embed_dim,
                    cfg.encoder_attention_heads,
                    cfg.encoder_ffn_embed_dim,
                    cfg.length_classes,
                )
            )

    @classmethod
    def build_model(cls, cfg, task):
        check_ranges(cfg)
        dictionary = task.source_dictionary
        if MASK_SYMBOL not in dictionary.indices:
            raise ValueError(
                f"the task dictionary has no {MASK_SYMBOL} symbol; re-binarize with "
                "scripts/prepare_prompted.py, which always adds it"
            )
        encoder_args = argparse.Namespace(
            **{f.name: safe_getattr(cfg, f.name) for f in fields(DiffusionXLMRConfig)}
        )
        if cfg.bf16_residual and not cfg.bf16_autocast:
            raise ValueError(
                "--bf16-residual carries the residual stream in bf16 under --bf16-autocast: "
                "add --bf16-autocast, or drop --bf16-residual"
            )
        roberta_base_architecture(encoder_args)
        # the paper unties the embeddings it prunes (docs/METHOD.md §1)
        encoder_args.untie_weights_roberta = cfg.untie_weights_roberta or (
            cfg.pretrained_mlm is not None and cfg.pretrained_vocab == "prune"
        )
        return cls(cfg, RobertaEncoder(encoder_args, dictionary), dictionary)

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="checkpoint_best.pt",
                        data_name_or_path=".", **kwargs):
        """A :class:`DiffusionHubInterface` (text in, text out); see ``hub_interface.py``."""
        return from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path, **kwargs)

    def add_lora(self):
        """Inject the LoRA adapters of ``--lora-rank`` > 0 (``modules/lora.py``); called by
        the task once the model holds its initial weights (``--pretrained-mlm``)."""
        cfg = self.cfg
        if safe_getattr(cfg, "lora_rank", 0) > 0:
            add_lora(self, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_modules,
                     cfg.lora_train_embeddings)

    def max_positions(self):
        return self.cfg.max_positions

    @property
    def tied_embeddings(self) -> bool:
        """Whether the LM head projects with the input embedding matrix itself."""
        return self.encoder.lm_head.weight is self.encoder.sentence_encoder.embed_tokens.weight

    def bf16_autocast(self, device):
        """bf16 autocast on ``device`` (CPU or CUDA) where --bf16-autocast asks for it."""
        enabled = self.bf16_autocast_enabled(device)
        if enabled and device.type == "cpu":
            warn_without_native_cpu_bf16()
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)

    def bf16_autocast_enabled(self, device) -> bool:
        """Whether :meth:`bf16_autocast` is on for ``device``."""
        return device.type in ("cpu", "cuda") and self.cfg.bf16_autocast

    def residual_dtype(self, device):
        """torch.bfloat16 where --bf16-residual puts each layer's input in bf16 (under
        :meth:`bf16_autocast`), else None (the stream stays in the weights' dtype)."""
        enabled = self.cfg.bf16_residual and self.bf16_autocast_enabled(device)
        return torch.bfloat16 if enabled else None

    def extract_features(self, tokens, prompt_lengths=None):
        """Final-layer features (B, L, H) of tokens (B, L); see :meth:`encode`."""
        return self.encode(tokens, prompt_lengths)[0]

    def encode(self, tokens, prompt_lengths=None):
        """Final-layer features (B, L, H) and each layer's input, a list of (L, B, H).

        With ``--prompt-attention prefix``, prompt_lengths (B,) (``<s>`` included)
        marks the prompt of each row, which then attends only to itself; without it
        every position attends to every position. Under :meth:`bf16_autocast`, with each
        layer's input cast to :meth:`residual_dtype` where that is set.
        """
        layers, hooks = self.encoder.sentence_encoder.layers, []
        if self.cfg.prompt_attention == "prefix" and prompt_lengths is not None:
            attn_mask = self.prefix_attention_mask(tokens, prompt_lengths)

            def add_mask(layer, args, kwargs):
                return args, {**kwargs, "attn_mask": attn_mask}

            hooks += [layer.register_forward_pre_hook(add_mask, with_kwargs=True) for layer in layers]
        residual_dtype = self.residual_dtype(tokens.device)
        if residual_dtype is not None:

            def cast_input(layer, args):
                return (args[0].to(residual_dtype), *args[1:])

            hooks += [layer.register_forward_pre_hook(cast_input) for layer in layers]
        try:
            with self.bf16_autocast(tokens.device):
                features, extra = self.encoder.extract_features(tokens, return_all_hiddens=True)
        finally:
            for hook in hooks:
                hook.remove()
        return features, extra["inner_states"][:-1]

    def prefix_attention_mask(self, tokens, prompt_lengths):
        """Bool (B * heads, L, L), True where a prompt query may not see a target key."""
        positions = utils.new_arange(tokens, tokens.size(1))
        in_prompt = positions.unsqueeze(0) < prompt_lengths.unsqueeze(1)
        blocked = in_prompt.unsqueeze(2) & ~in_prompt.unsqueeze(1)
        return blocked.repeat_interleave(self.cfg.encoder_attention_heads, dim=0)

    def output_layer(self, features, positions):
        """LM-head logits (positions.sum(), V) in fp32 at the True entries of positions (B, L)
        (every position, (B, L, V), when positions is None)."""
        with self.bf16_autocast(features.device):
            logits = self.encoder.lm_head(features, masked_tokens=positions)
        return logits.float()

    def logits(self, tokens, positions, prompt_lengths=None, cache: Optional[PromptCache] = None):
        """LM-head logits (positions.sum(), V) of tokens (B, L) at the True entries of
        positions (B, L) (every position, (B, L, V), when positions is None and there is
        no cache); prompt_lengths (B,) as in :meth:`encode`.

        With ``cache`` (the prompt's per-layer states, see ``modules/prompt_cache.py``)
        only the target positions run through the layers; positions must then lie in
        the target.
        """
        if cache is None:
            return self.output_layer(self.extract_features(tokens, prompt_lengths), positions)
        with self.bf16_autocast(tokens.device):
            features, target_index, target_padding = target_features(
                self.encoder.sentence_encoder, tokens, prompt_lengths, cache, self.pad,
                self.residual_dtype(tokens.device),
            )
        return self.output_layer(features, positions.gather(1, target_index) & ~target_padding)

    # ---------------------------------------------------------------- training
    def forward(self, src_tokens, prompt_lengths, noised_tokens, score_mask, predict_length=True,
                prompt_rows=None):
        """Denoise ``noised_tokens`` and predict target lengths from the prompts.

        src_tokens (B, S): ``<s> prompt`` right-padded; noised_tokens (R, L): full
        sequences with masked targets; prompt_lengths (R,): the prompt length of each
        noised row (used with ``--prompt-attention prefix``); score_mask (R, L):
        positions to score; prompt_rows (R,): the row of src_tokens each noised row
        holds (the criterion's noised copies), or None.
        Returns ``{"word_logits": (score_mask.sum(), V), "length_logits": (B, C) or None}``.

        Under ``--prompt-attention prefix`` with prompt_rows the prompt sees only itself,
        so its states are the same in every noised copy of it: one prompt-only pass
        (which the joint length head also reads) gives every layer's prompt states, and
        only the targets run through the layers, against them (``modules/prompt_cache.py``).
        """
        if self.cfg.prompt_attention == "prefix" and prompt_rows is not None:
            features, layer_inputs = self.encode(src_tokens)
            cache = PromptCache.from_layer_inputs(
                layer_inputs, src_tokens.ne(self.pad).sum(1), src_tokens.size(1)
            ).select(prompt_rows)
            word_logits = self.logits(noised_tokens, score_mask, prompt_lengths, cache)
            length_logits = self.forward_length(src_tokens, features) if predict_length else None
        else:
            word_logits = self.logits(noised_tokens, score_mask, prompt_lengths)
            length_logits = self.forward_length(src_tokens) if predict_length else None
        return {"word_logits": word_logits, "length_logits": length_logits}

    def forward_length(self, src_tokens, prompt_features=None):
        """Length logits (B, C) from a prompt-only pass over src_tokens (B, S).

        The separate predictor reads the frozen backbone's features computed without
        gradient and without dropout. prompt_features (B, S, H): that pass's features
        when the caller already has them (decoding, and the joint head in training under
        prefix attention). The features (fp32,
        or bf16 under --bf16-autocast) go into the length head in the dtype of
        its weights, which fairseq's --fp16 / --bf16 casts to half / bfloat16.
        """
        if self.cfg.length_predictor == "separate":
            if prompt_features is None:
                was_training = self.encoder.training
                self.encoder.eval()
                with torch.no_grad():
                    prompt_features = self.extract_features(src_tokens)
                self.encoder.train(was_training)
            return self.length_predictor(prompt_features, src_tokens.eq(self.pad))
        if prompt_features is None:
            prompt_features = self.extract_features(src_tokens)
        features = prompt_features.float()
        keep = src_tokens.ne(self.pad).unsqueeze(-1).type_as(features)
        pooled = (features * keep).sum(1) / keep.sum(1)
        return self.length_head(pooled.to(self.length_head.weight.dtype))

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        """fairseq's, refusing parameters trained with a dictionary of another size."""
        embeddings = state_dict.get("encoder.sentence_encoder.embed_tokens.weight")
        num_symbols = self.encoder.sentence_encoder.embed_tokens.num_embeddings
        if embeddings is not None and embeddings.size(0) != num_symbols:
            raise ValueError(
                f"the checkpoint was trained with a {embeddings.size(0)}-symbol dictionary, the "
                f"task's dictionary has {num_symbols} symbols: decode with the data directory "
                "(dict.*.txt) the checkpoint was trained on"
            )
        return super().load_state_dict(state_dict, strict, model_cfg, args)

    def upgrade_state_dict_named(self, state_dict, name):
        """A diffusion checkpoint without the separate predictor gets its initial weights
        (stage two of the length training starts from such a checkpoint) and loses its
        joint length head (as do stage-two checkpoints that still carry one); one with untied
        embeddings (a pruned vocabulary) must go into an untied model; a plain checkpoint's
        projections go under the adapters of a LoRA model (``modules/lora.py``), and a LoRA
        checkpoint needs one."""
        super().upgrade_state_dict_named(state_dict, name)
        prefix = name + "." if name else ""
        embeddings = state_dict.get(f"{prefix}encoder.sentence_encoder.embed_tokens.weight")
        output = state_dict.get(f"{prefix}encoder.lm_head.weight", embeddings)
        if self.tied_embeddings and embeddings is not None and not torch.equal(embeddings, output):
            raise ValueError(
                "the checkpoint's input and output embeddings differ (untied, e.g. by "
                "--pretrained-vocab prune) but this model ties them; pass --untie-weights-roberta"
            )
        if safe_getattr(self.cfg, "lora_rank", 0) > 0:
            plain_to_lora_keys(state_dict, self, prefix)
        elif any(key.startswith(prefix) and ".lora_A." in key for key in state_dict):
            raise ValueError(
                "the checkpoint holds LoRA adapters (trained with --lora-rank) but this model has "
                "none: pass the checkpoint's --lora-rank and --lora-modules, or merge it into a "
                "plain checkpoint first (python scripts/merge_lora.py LORA.pt MERGED.pt)"
            )
        if self.cfg.length_predictor == "separate":
            for key in [k for k in state_dict if k.startswith(f"{prefix}length_head.")]:
                del state_dict[key]  # the joint head, which a separate-predictor model lacks
            for key, value in self.length_predictor.state_dict().items():
                state_dict.setdefault(f"{prefix}length_predictor.{key}", value)


def gelu(x):
    """fairseq's gelu, ``F.gelu(x.float()).type_as(x)``, without its two copies of every
    feed-forward activation where they change nothing: PyTorch's gelu of an fp32 or bf16
    tensor gives the same bits, forward and backward (its bf16 kernel computes in fp32
    and rounds once; tests/test_throughput_levers.py). fp16 keeps fairseq's."""
    return fairseq_gelu(x) if x.dtype == torch.float16 else F.gelu(x)


@functools.lru_cache(maxsize=None)
def warn_without_native_cpu_bf16():
    """Warn once when this CPU has no native bf16 (AVX512-BF16 or AMX): its bf16 matrix
    products then run PyTorch's reference kernels, tens of times slower than fp32."""
    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        logger.warning(
            "--bf16-autocast on a CPU without native bf16 (no AVX512-BF16 or AMX; "
            f"capability {torch.backends.cpu.get_cpu_capability()}): bf16 matrix products are "
            "many times slower than fp32 here; drop --bf16-autocast"
        )


@register_model_architecture("diffusion_xlmr", "diffusion_xlmr_tiny")
def diffusion_xlmr_tiny(args):
    """A small model for tests, the quickstart and CPU benchmarks."""
    args.encoder_layers = safe_getattr(args, "encoder_layers", 6)
    args.encoder_embed_dim = safe_getattr(args, "encoder_embed_dim", 256)
    args.encoder_ffn_embed_dim = safe_getattr(args, "encoder_ffn_embed_dim", 1024)
    args.encoder_attention_heads = safe_getattr(args, "encoder_attention_heads", 4)
    args.max_positions = safe_getattr(args, "max_positions", 256)
    args.length_classes = safe_getattr(args, "length_classes", 256)
    base_architecture(args)


@register_model_architecture("diffusion_xlmr", "diffusion_xlmr_base")
def base_architecture(args):
    """XLM-R base: 12 layers x 768, 12 heads, post-LayerNorm."""
    args.encoder_layers = safe_getattr(args, "encoder_layers", 12)
    args.encoder_embed_dim = safe_getattr(args, "encoder_embed_dim", 768)
    args.encoder_ffn_embed_dim = safe_getattr(args, "encoder_ffn_embed_dim", 3072)
    args.encoder_attention_heads = safe_getattr(args, "encoder_attention_heads", 12)
    args.encoder_normalize_before = safe_getattr(args, "encoder_normalize_before", False)
    args.layernorm_embedding = safe_getattr(args, "layernorm_embedding", True)
    args.max_positions = safe_getattr(args, "max_positions", 512)
    args.length_classes = safe_getattr(args, "length_classes", 512)
    for config_field in fields(DiffusionXLMRConfig):
        if safe_getattr(args, config_field.name) is None:
            setattr(args, config_field.name, config_field.default)


@register_model_architecture("diffusion_xlmr", "diffusion_xlmr_large")
def diffusion_xlmr_large(args):
    """XLM-R large: 24 layers x 1024, 16 heads, post-LayerNorm."""
    args.encoder_layers = safe_getattr(args, "encoder_layers", 24)
    args.encoder_embed_dim = safe_getattr(args, "encoder_embed_dim", 1024)
    args.encoder_ffn_embed_dim = safe_getattr(args, "encoder_ffn_embed_dim", 4096)
    args.encoder_attention_heads = safe_getattr(args, "encoder_attention_heads", 16)
    base_architecture(args)


@register_model_architecture("diffusion_xlmr", "diffusion_xlmr_xl")
def diffusion_xlmr_xl(args):
    """XLM-R XL: 36 layers x 2560, 32 heads, pre-LayerNorm."""
    args.encoder_layers = safe_getattr(args, "encoder_layers", 36)
    args.encoder_embed_dim = safe_getattr(args, "encoder_embed_dim", 2560)
    args.encoder_ffn_embed_dim = safe_getattr(args, "encoder_ffn_embed_dim", 10240)
    args.encoder_attention_heads = safe_getattr(args, "encoder_attention_heads", 32)
    args.encoder_normalize_before = safe_getattr(args, "encoder_normalize_before", True)
    args.layernorm_embedding = safe_getattr(args, "layernorm_embedding", False)
    base_architecture(args)


@register_model_architecture("diffusion_xlmr", "diffusion_xlmr_xxl")
def diffusion_xlmr_xxl(args):
    """XLM-R XXL: 48 layers x 4096, 32 heads, pre-LayerNorm."""
    args.encoder_layers = safe_getattr(args, "encoder_layers", 48)
    args.encoder_embed_dim = safe_getattr(args, "encoder_embed_dim", 4096)
    args.encoder_ffn_embed_dim = safe_getattr(args, "encoder_ffn_embed_dim", 16384)
    args.encoder_attention_heads = safe_getattr(args, "encoder_attention_heads", 32)
    diffusion_xlmr_xl(args)
