#!/usr/bin/env python3
"""Merge the LoRA adapters of a checkpoint trained with ``--lora-rank R`` into a plain one.

Each adapted projection's weight becomes ``W + alpha / R * B A`` (peft's merge); the
output is a fairseq checkpoint of the same model with ``--lora-rank 0`` that
``fairseq-generate``, ``fairseq-interactive``, the Python interface and the lm-eval
model read like any other, and that ``fairseq-train --finetune-from-model`` starts from
(the optimizer state of the adapters is dropped).

    python scripts/merge_lora.py checkpoints/lora/checkpoint_best.pt checkpoints/lora/merged.pt
"""

import argparse
import os

import torch
from fairseq import checkpoint_utils, tasks
from omegaconf import OmegaConf, open_dict

import diffusion_plugin  # noqa: F401  (registers the plugin's components)
from diffusion_plugin.modules.lora import merge_lora


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("checkpoint", help="a checkpoint trained with --lora-rank > 0")
    parser.add_argument("output", help="where the merged checkpoint goes (a .pt file)")
    parser.add_argument("--data", help="the binarized data directory (default: the one the checkpoint records)")
    return parser


def main(argv=None):
    opts = get_parser().parse_args(argv)
    overrides = {"data": opts.data} if opts.data else None
    state = checkpoint_utils.load_checkpoint_to_cpu(opts.checkpoint, overrides)
    cfg = state["cfg"]
    if cfg.model.get("lora_rank", 0) <= 0:
        raise SystemExit(f"{opts.checkpoint} has no LoRA adapters (--lora-rank 0); nothing to merge")
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model, from_checkpoint=True)
    model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    merged = merge_lora(model)
    with open_dict(cfg.model):
        cfg.model.lora_rank = 0
    state["model"] = model.state_dict()
    state["cfg"] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # as fairseq saves it
    state.pop("last_optimizer_state", None)
    os.makedirs(os.path.dirname(os.path.abspath(opts.output)), exist_ok=True)
    temporary = opts.output + ".tmp"
    torch.save(state, temporary)
    os.replace(temporary, opts.output)
    print(f"merged {merged} adapted projections into {opts.output}")
    return opts.output


if __name__ == "__main__":
    main()
