"""LoRA adapters (``peft``) on the transformer layers of a diffusion_xlmr model.

``add_lora`` injects peft's LoRA layers into the named linear projections of every
encoder layer (``--lora-modules``; the attention projections and the feed-forward by
default) and leaves only the adapters trainable (plus, with
``--lora-train-embeddings``, the input and output embeddings, and the joint length
head, a task head). ``merge_lora`` folds the adapters into the weights they adapt
(peft's own merge) and gives back plain ``nn.Linear`` modules, as a model built with
``--lora-rank 0`` has.

The adapted projections keep their base weight under ``<name>.base_layer.weight``
(peft's naming); ``plain_to_lora_keys`` renames a plain checkpoint's keys to those, so
a model with adapters can start from a plain checkpoint (``--finetune-from-model``).
"""

from typing import Dict, List

import torch
import torch.nn as nn

ADAPTER_MARK = "lora_"
ADAPTER_NAME = "default"
EMBEDDING_PARAMETERS = ("encoder.sentence_encoder.embed_tokens.", "encoder.lm_head.weight", "encoder.lm_head.bias")
DEFAULT_MODULES = "q_proj,k_proj,v_proj,out_proj,fc1,fc2"
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")
LAYER_LINEARS = ATTENTION_PROJECTIONS + ("fc1", "fc2")


def lora_module_names(modules: str) -> List[str]:
    """The comma-separated ``--lora-modules`` as a list, each checked against the layers' linears."""
    names = [name.strip() for name in modules.split(",") if name.strip()]
    unknown = [name for name in names if name not in LAYER_LINEARS]
    if not names or unknown:
        raise ValueError(
            f"--lora-modules {modules!r}: {unknown or 'no module'} is not a linear projection of "
            f"the encoder layers; choose from {','.join(LAYER_LINEARS)}"
        )
    return names


def add_lora(model: nn.Module, rank: int, alpha: float, dropout: float, modules: str,
             train_embeddings: bool) -> None:
    """Inject LoRA adapters of ``rank`` into ``model.encoder.sentence_encoder``'s layers
    and freeze everything else, as described in the module docstring."""
    from fairscale.nn.wrap.auto_wrap import ConfigAutoWrap
    from peft import LoraConfig, inject_adapter_in_model

    if ConfigAutoWrap.in_autowrap_context:
        raise ValueError(
            "--lora-rank with --ddp-backend fully_sharded is not supported: FSDP flattens a "
            "layer's frozen weights and its trainable adapters into one parameter. Train the "
            "adapters with --ddp-backend legacy_ddp (or c10d); the frozen base needs no "
            "optimizer state, so plain data parallelism usually fits (scripts/plan_memory.py "
            "--lora-rank R)"
        )
    if alpha <= 0 or not 0 <= dropout < 1:
        raise ValueError(f"--lora-alpha must be > 0 and --lora-dropout in [0, 1), got {alpha}, {dropout}")
    names = lora_module_names(modules)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names, bias="none")
    inject_adapter_in_model(config, model.encoder.sentence_encoder, adapter_name=ADAPTER_NAME)
    if any(name in ATTENTION_PROJECTIONS for name in names):
        for module in model.modules():
            # fairseq's fast attention path reads q_proj.weight etc. directly, which would skip
            # the adapters; its own slower path calls each projection
            if hasattr(module, "_set_skip_embed_dim_check"):
                module._set_skip_embed_dim_check()
    for name, module in model.named_modules():
        if ADAPTER_MARK in name and module._parameters.get("bias", False) is None:
            # the adapters' absent biases: fairseq's Trainer would log every pair of them as a
            # shared parameter (it catalogues None entries); a plain attribute is not catalogued
            del module._parameters["bias"]
            object.__setattr__(module, "bias", None)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = is_trained_with_lora(model, name, train_embeddings)


def is_trained_with_lora(model: nn.Module, name: str, train_embeddings: bool) -> bool:
    """Whether parameter ``name`` of a model with adapters is trained: the adapters, the
    joint length head and, with ``train_embeddings``, the embeddings; with the separate
    length predictor only the predictor (stage two freezes the adapters too)."""
    if model.cfg.length_predictor == "separate":
        return name.startswith("length_predictor.")
    if ADAPTER_MARK in name or name.startswith("length_head."):
        return True
    return train_embeddings and name.startswith(EMBEDDING_PARAMETERS)


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter of ``model`` into its base weight and put the base ``nn.Linear``
    back in its place; returns how many projections were merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge(safe_merge=True)
                setattr(parent, child_name, child.get_base_layer())
                merged += 1
    return merged


def plain_to_lora_keys(state_dict: Dict[str, torch.Tensor], model: nn.Module, prefix: str) -> None:
    """Rename, in place, a plain checkpoint's ``X.weight`` / ``X.bias`` of every adapted
    projection X to ``X.base_layer.*`` and add ``model``'s initial adapter weights (B = 0:
    the adapted model starts equal to the plain one)."""
    for key, value in model.state_dict().items():
        full = prefix + key
        if ".base_layer." in key:
            plain = full.replace(".base_layer.", ".")
            if full not in state_dict and plain in state_dict:
                state_dict[full] = state_dict.pop(plain)
        elif ADAPTER_MARK in key:
            state_dict.setdefault(full, value)
