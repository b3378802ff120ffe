"""
Diffusion language model on an XLM-R (RoBERTa) encoder.

Ye et al., 2023, "Diffusion Language Models Can Perform Many Tasks with Scaling
and Instruction-Finetuning" (arXiv 2308.12219): one sequence
``<s> prompt target </s>``, fully bidirectional attention, positions running on
from the prompt into the target, the masked-LM head scoring only the target
positions that are trained or decoded, and no timestep embedding.
"""

import argparse
from dataclasses import dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq import utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.iterative_refinement_generator import DecoderOut
from fairseq.models import (
    BaseFairseqModel,
    register_model,
    register_model_architecture,
)
from fairseq.models.roberta.model import RobertaEncoder
from fairseq.models.roberta.model import base_architecture as roberta_base_architecture
from fairseq.utils import safe_getattr

from diffusion_plugin.absorbing_diffusion import AbsorbingDiffusion, ReverseStrategy

MASK_SYMBOL = "<mask>"


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
        default=False, metadata={"help": "untie the input embedding and the LM-head projection"}
    )
    length_classes: int = field(
        default=512, metadata={"help": "classes of the length head; class k = k+1 target tokens"}
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
    cpu_bf16: bool = field(
        default=False,
        metadata={
            "help": "on CPU, run the transformer under bf16 autocast (fp32 weights, optimizer "
            "and loss); fairseq's own --bf16 needs a GPU"
        },
    )


@register_model("diffusion_xlmr", dataclass=DiffusionXLMRConfig)
class DiffusionXLMRModel(BaseFairseqModel):
    """RoBERTa encoder + LM head as a masked-diffusion denoiser, with a length head.

    The length head is CMLM-style and trained jointly: a linear classifier over the
    mean of the prompt's features from a prompt-only pass.
    """

    def __init__(self, cfg, encoder: RobertaEncoder, dictionary):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.length_head = nn.Linear(cfg.encoder_embed_dim, cfg.length_classes)
        self.pad = dictionary.pad()
        self.eos = dictionary.eos()
        self.mask = dictionary.index(MASK_SYMBOL)
        self.diffusion = AbsorbingDiffusion(self.mask)
        self.never_emitted = [self.mask, self.pad, dictionary.bos(), self.eos]

    @classmethod
    def build_model(cls, cfg, task):
        dictionary = task.source_dictionary
        if MASK_SYMBOL not in dictionary.indices:
            raise ValueError(
                f"the task dictionary has no {MASK_SYMBOL} symbol; re-binarize with "
                "scripts/prepare_prompted.py, which always adds it"
            )
        encoder_args = argparse.Namespace(
            **{f.name: safe_getattr(cfg, f.name) for f in fields(DiffusionXLMRConfig)}
        )
        roberta_base_architecture(encoder_args)
        return cls(cfg, RobertaEncoder(encoder_args, dictionary), dictionary)

    def max_positions(self):
        return self.cfg.max_positions

    def extract_features(self, tokens):
        """Final-layer features (B, L, H) of tokens (B, L); bf16 autocast with --cpu-bf16."""
        use_bf16 = self.cfg.cpu_bf16 and tokens.device.type == "cpu"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            features, _ = self.encoder.extract_features(tokens)
        return features

    def output_layer(self, features, positions):
        """LM-head logits (positions.sum(), V) in fp32 at the True entries of positions (B, L)."""
        use_bf16 = self.cfg.cpu_bf16 and features.device.type == "cpu"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            logits = self.encoder.lm_head(features, masked_tokens=positions)
        return logits.float()

    # ---------------------------------------------------------------- training
    def forward(self, src_tokens, src_lengths, noised_tokens, score_mask, predict_length=True):
        """Denoise ``noised_tokens`` and predict target lengths from the prompts.

        src_tokens (B, S): ``<s> prompt`` right-padded; noised_tokens (R, L): full
        sequences with masked targets; score_mask (R, L): positions to score.
        Returns ``{"word_logits": (score_mask.sum(), V), "length_logits": (B, C) or None}``.
        """
        word_logits = self.output_layer(self.extract_features(noised_tokens), score_mask)
        length_logits = self.forward_length(src_tokens) if predict_length else None
        return {"word_logits": word_logits, "length_logits": length_logits}

    def forward_length(self, src_tokens):
        """Length logits (B, C) from a prompt-only pass over src_tokens (B, S)."""
        features = self.extract_features(src_tokens).float()
        keep = src_tokens.ne(self.pad).unsqueeze(-1).type_as(features)
        pooled = (features * keep).sum(1) / keep.sum(1)
        return self.length_head(pooled)

    # ------------------------------------------------------ NAT decoding protocol
    def forward_encoder(self, encoder_inputs):
        """``encoder_inputs = [src_tokens (B, S), src_lengths (B,)]``: the prompts."""
        src_tokens, src_lengths = encoder_inputs
        return {
            "src_tokens": src_tokens,
            "prompt_lengths": src_tokens.ne(self.pad).sum(1),
            "length_logits": self.forward_length(src_tokens),
        }

    def reorder_encoder_out(self, encoder_out, new_order):
        """Select rows ``new_order`` (LongTensor) of every tensor in ``encoder_out``."""
        return {key: value.index_select(0, new_order) for key, value in encoder_out.items()}

    def predict_lengths(self, encoder_out, beam_size=1):
        """The ``beam_size`` most likely target lengths: LongTensor (B, beam_size)."""
        return encoder_out["length_logits"].topk(beam_size, dim=-1).indices + 1

    def initialize_output_tokens(self, encoder_out, src_tokens, target_lengths=None):
        """Canvases ``<s> prompt <mask>*L </s>`` right-padded: DecoderOut with (B, T) tokens.

        target_lengths (B,) defaults to the length head's argmax.
        """
        if target_lengths is None:
            target_lengths = self.predict_lengths(encoder_out).squeeze(1)
        prompt_lengths = encoder_out["prompt_lengths"]
        total = prompt_lengths + target_lengths + 1
        positions = utils.new_arange(src_tokens, src_tokens.size(0), int(total.max()))
        prompt_len, canvas_len = prompt_lengths.unsqueeze(1), total.unsqueeze(1)
        canvas = src_tokens.new_full(positions.shape, self.pad)
        canvas[positions < canvas_len - 1] = self.mask
        canvas[positions == canvas_len - 1] = self.eos
        prompt_width = src_tokens.size(1)
        in_prompt = positions[:, :prompt_width] < prompt_len
        canvas[:, :prompt_width] = torch.where(in_prompt, src_tokens, canvas[:, :prompt_width])
        scores = torch.zeros(canvas.shape, device=canvas.device)
        scores = scores.masked_fill(canvas.eq(self.mask), float("-inf"))
        return DecoderOut(
            output_tokens=canvas,
            output_scores=scores,
            attn=None,
            step=0,
            max_step=0,
            history=None,
        )

    def decodable_positions(self, output_tokens, prompt_lengths):
        """Target content positions (after the prompt, before the final ``</s>``): (B, T)."""
        positions = utils.new_arange(output_tokens, *output_tokens.size())
        end = output_tokens.ne(self.pad).sum(1, keepdim=True) - 1
        return (positions >= prompt_lengths.unsqueeze(1)) & (positions < end)

    def forward_decoder(self, decoder_out, encoder_out, strategy: ReverseStrategy = None, **kwargs):
        """One reverse-diffusion step over every canvas; returns the next DecoderOut."""
        strategy = strategy or ReverseStrategy.parse("reparam-uncond-deterministic-cosine")
        tokens, scores = decoder_out.output_tokens, decoder_out.output_scores
        decodable = self.decodable_positions(tokens, encoder_out["prompt_lengths"])
        logits = self.output_layer(self.extract_features(tokens), decodable)
        logits[:, self.never_emitted] = float("-inf")
        best_scores, best_tokens = F.log_softmax(logits, dim=-1).max(-1)
        proposal_tokens = tokens.masked_scatter(decodable, best_tokens)
        proposal_scores = torch.zeros_like(scores).masked_scatter(decodable, best_scores)
        step = decoder_out.step + 1
        tokens, scores = self.diffusion.reverse_step(
            tokens,
            scores,
            decodable,
            proposal_tokens,
            proposal_scores,
            step,
            decoder_out.max_step,
            strategy,
        )
        history = decoder_out.history
        if history is not None:
            history = history + [tokens.clone()]
        return decoder_out._replace(
            output_tokens=tokens, output_scores=scores, step=step, history=history
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
