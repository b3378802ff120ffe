"""The prompt cache: every layer's input at the prompt positions, so that a decoding
step runs only the target through the layers (keys and values are linear in those
inputs). Exact for a model trained with ``--prompt-attention prefix``, whose prompt
never sees the target; Fast-dLLM's approximate cache otherwise."""

from dataclasses import dataclass

import torch
from fairseq import utils
from torch import Tensor


@dataclass
class PromptCache:
    """``states`` (B, layers, S, H): each layer's input at the S prompt positions of a
    pass; ``padding`` (B, S): True past each row's prompt."""

    states: Tensor
    padding: Tensor

    @classmethod
    def from_layer_inputs(cls, layer_inputs, prompt_lengths: Tensor, prompt_width: int) -> "PromptCache":
        """The cache of the first ``prompt_width`` positions of each layer's input
        (L, B, H) of a pass (``DiffusionXLMRModel.encode``); prompt_lengths (B,)."""
        states = torch.stack([x[:prompt_width] for x in layer_inputs], dim=0)
        positions = utils.new_arange(prompt_lengths, 1, prompt_width)
        return cls(states.permute(2, 0, 1, 3).contiguous(), positions >= prompt_lengths.unsqueeze(1))

    def select(self, rows: Tensor) -> "PromptCache":
        """The cache of rows ``rows`` (LongTensor)."""
        return PromptCache(self.states.index_select(0, rows), self.padding.index_select(0, rows))


def target_features(sentence_encoder, tokens: Tensor, prompt_lengths: Tensor, cache: PromptCache, pad: int,
                    residual_dtype=None):
    """Final-layer features (B, T, H) of the target part of tokens (B, L).

    Only the target positions run through fairseq's ``TransformerEncoder``
    ``sentence_encoder``: each layer's queries are the target's states, its keys and
    values those of the cached prompt states followed by the target's. Row b's target
    starts at prompt_lengths[b]; also returns target_index (B, T) (the canvas position
    of each target slot, clamped) and target_padding (B, T). The caller sets autocast;
    residual_dtype, where given, is the dtype of each layer's input (``--bf16-residual``).
    """
    canvas_lengths = tokens.ne(pad).sum(1)
    width = int((canvas_lengths - prompt_lengths).max())
    target_index = prompt_lengths.unsqueeze(1) + utils.new_arange(tokens, 1, width)
    target_padding = target_index >= canvas_lengths.unsqueeze(1)
    target_index = target_index.clamp(max=tokens.size(1) - 1)
    key_padding = torch.cat([cache.padding, target_padding], dim=1)
    embedded, _ = sentence_encoder.forward_embedding(tokens)
    index = target_index.unsqueeze(-1).expand(-1, -1, embedded.size(-1))
    x = embedded.gather(1, index).masked_fill(target_padding.unsqueeze(-1), 0.0)
    x = x.transpose(0, 1)
    for layer_index, layer in enumerate(sentence_encoder.layers):
        prompt_states = cache.states[:, layer_index].transpose(0, 1)
        x = x if residual_dtype is None else x.to(residual_dtype)
        x = _layer_with_cached_prompt(layer, x, prompt_states.type_as(x), key_padding)
    if sentence_encoder.layer_norm is not None:
        x = sentence_encoder.layer_norm(x)
    return x.transpose(0, 1), target_index, target_padding


def _layer_with_cached_prompt(layer, x, prompt_states, key_padding):
    """fairseq's TransformerEncoderLayer on queries x (T, B, H) whose keys and values
    are ``cat(prompt_states (S, B, H), x)``; key_padding (B, S + T). fairseq's layer
    takes no separate keys, so its forward is followed here with its own modules."""
    residual = x
    keys = torch.cat([prompt_states, x], dim=0)
    if layer.normalize_before:
        x, keys = layer.self_attn_layer_norm(x), layer.self_attn_layer_norm(keys)
    x, _ = layer.self_attn(
        query=x, key=keys, value=keys, key_padding_mask=key_padding, need_weights=False
    )
    x = layer.residual_connection(layer.dropout_module(x), residual)
    if not layer.normalize_before:
        x = layer.self_attn_layer_norm(x)
    residual = x
    if layer.normalize_before:
        x = layer.final_layer_norm(x)
    x = layer.fc2(layer.activation_dropout_module(layer.activation_fn(layer.fc1(x))))
    x = layer.residual_connection(layer.dropout_module(x), residual)
    if not layer.normalize_before:
        x = layer.final_layer_norm(x)
    return x
