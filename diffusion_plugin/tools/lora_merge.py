"""Merging the LoRA adapters of a checkpoint into a plain one (scripts/merge_lora.py).

Each adapted projection's weight becomes ``W + alpha / R * B A`` (peft's merge); the
output is a fairseq checkpoint of the same model with ``--lora-rank 0`` that
``fairseq-generate``, ``fairseq-interactive``, the Python interface and the lm-eval
model read like any other, and that ``fairseq-train --finetune-from-model`` starts from
(the optimizer state of the adapters is dropped).
"""

import os
from typing import Optional

import torch
from fairseq import checkpoint_utils, tasks
from omegaconf import OmegaConf, open_dict

import diffusion_plugin  # noqa: F401  (registers the plugin's components)
from diffusion_plugin.modules.lora import merge_lora


def merge_checkpoint(checkpoint: str, output: str, data: Optional[str] = None) -> int:
    """Write ``checkpoint``'s model with its adapters merged to ``output`` (written whole
    or not at all); ``data`` overrides the data directory it records. Returns the number
    of merged projections; a ValueError for a checkpoint without adapters."""
    state = checkpoint_utils.load_checkpoint_to_cpu(checkpoint, {"data": data} if data else None)
    cfg = state["cfg"]
    if cfg.model.get("lora_rank", 0) <= 0:
        raise ValueError(f"{checkpoint} has no LoRA adapters (--lora-rank 0); nothing to merge")
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model, from_checkpoint=True)
    model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    merged = merge_lora(model)
    with open_dict(cfg.model):
        cfg.model.lora_rank = 0
    state["model"] = model.state_dict()
    state["cfg"] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # as fairseq saves it
    state.pop("last_optimizer_state", None)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    temporary = output + ".tmp"
    torch.save(state, temporary)
    os.replace(temporary, output)
    return merged
