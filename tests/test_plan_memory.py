"""scripts/plan_memory.py (diffusion_plugin.tools.memory_plan): its parameter counts are
the models' own, and its table."""

import argparse
import sys

import pytest
import torch
from fairseq.data import Dictionary

from helpers import run
from diffusion_plugin.models.diffusion_xlmr import DiffusionXLMRConfig, DiffusionXLMRModel
from diffusion_plugin.tools import memory_plan


@pytest.fixture(scope="module")
def xlmr_sized_dictionary():
    """A dictionary of XLM-R's 250,002 symbols, <mask> last."""
    dictionary = Dictionary()
    for i in range(memory_plan.XLMR_VOCABULARY - len(dictionary) - 1):
        dictionary.add_symbol(f"w{i}")
    dictionary.add_symbol("<mask>")
    return dictionary


@pytest.mark.parametrize("arch", memory_plan.ARCHS)
@pytest.mark.parametrize("untied", [False, True])
@pytest.mark.parametrize("length_predictor", ["joint", "separate"])
def test_parameter_count_equals_the_models(arch, untied, length_predictor, xlmr_sized_dictionary,
                                           monkeypatch):
    # built on the meta device, nothing is allocated; fairseq's BERT initialisation
    # copies through the CPU and cannot run there (it changes no count)
    monkeypatch.setattr("fairseq.models.roberta.model.init_bert_params", lambda module: None)
    args = memory_plan.architecture(arch)
    args.untie_weights_roberta, args.length_predictor = untied, length_predictor
    cfg = DiffusionXLMRConfig(**{name: getattr(args, name) for name in DiffusionXLMRConfig.__dataclass_fields__})
    task = argparse.Namespace(source_dictionary=xlmr_sized_dictionary)
    with torch.device("meta"):
        model = DiffusionXLMRModel.build_model(cfg, task)
    assert model.tied_embeddings is not untied
    expected = sum(p.numel() for p in model.parameters())
    parts = memory_plan.count_parameters(args, len(xlmr_sized_dictionary), untied, length_predictor)
    assert sum(parts.values()) == expected
    layers = model.encoder.sentence_encoder.layers
    assert parts["layers"] == sum(p.numel() for p in layers.parameters())


def test_xxl_is_10_7_billion_parameters():
    args = memory_plan.architecture("diffusion_xlmr_xxl")
    total = sum(memory_plan.count_parameters(args, memory_plan.XLMR_VOCABULARY, False, "joint").values())
    assert 10.6e9 < total < 10.8e9


def test_fsdp_shards_the_optimizer_state_and_checkpointing_saves_activations():
    common = {"precision": "bf16", "gpu_memory": 80}
    setups = [memory_plan.MemorySetup(**common, ddp_backend="c10d"),
              memory_plan.MemorySetup(**common, ddp_backend="fully_sharded", gpus=8),
              memory_plan.MemorySetup(**common, gpus=8, checkpoint_activations=True)]
    ddp, fsdp, fsdp_ckpt = (memory_plan.plan("diffusion_xlmr_xxl", setup) for setup in setups)
    params = fsdp["params"]
    # DDP bf16: fp32 master weights and gradients + two Adam moments on every GPU;
    # FSDP: the two Adam moments sharded over 8 GPUs
    assert ddp["gib"]["optimizer"] == pytest.approx((4 + 4 + 8) * params / memory_plan.GIB)
    assert fsdp["gib"]["optimizer"] == pytest.approx(8 * params / 8 / memory_plan.GIB)
    assert fsdp_ckpt["gib"]["activations"] < fsdp["gib"]["activations"] / 5
    assert not ddp["fits"] and fsdp_ckpt["fits"]
    assert "| diffusion_xlmr_xxl | 10.711B |" in memory_plan.table([fsdp])
    assert memory_plan.setup_line(setups[1]).startswith("8 GPUs x 80 GiB, FSDP, bf16")


@pytest.mark.parametrize("arch", ["diffusion_xlmr_tiny", "diffusion_xlmr_base"])
@pytest.mark.parametrize("untied", [False, True])
@pytest.mark.parametrize("lora", [("q_proj,v_proj", False), ("q_proj,k_proj,v_proj,out_proj,fc1,fc2", True)])
def test_lora_counts_equal_the_adapted_models(arch, untied, lora, monkeypatch):
    modules, train_embeddings = lora
    monkeypatch.setattr("fairseq.models.roberta.model.init_bert_params", lambda module: None)
    dictionary = Dictionary()
    for i in range(500):
        dictionary.add_symbol(f"w{i}")
    dictionary.add_symbol("<mask>")
    args = memory_plan.architecture(arch)
    args.untie_weights_roberta = untied
    args.lora_rank, args.lora_modules, args.lora_train_embeddings = 8, modules, train_embeddings
    cfg = DiffusionXLMRConfig(**{name: getattr(args, name) for name in DiffusionXLMRConfig.__dataclass_fields__})
    with torch.device("meta"):
        model = DiffusionXLMRModel.build_model(cfg, argparse.Namespace(source_dictionary=dictionary))
        model.add_lora()
    parts = memory_plan.count_parameters(args, len(dictionary), untied, "joint")
    adapters, trained = memory_plan.trainable_parameters(
        args, parts, len(dictionary), untied, "joint", 8, modules, train_embeddings)
    assert sum(parts.values()) + adapters == sum(p.numel() for p in model.parameters())
    assert trained == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_lora_keeps_optimizer_state_for_the_adapters_alone_and_fits_one_gpu():
    common = dict(precision="bf16", ddp_backend="c10d", checkpoint_activations=True)
    full = memory_plan.plan("diffusion_xlmr_xxl", memory_plan.MemorySetup(**common))
    lora = memory_plan.plan("diffusion_xlmr_xxl", memory_plan.MemorySetup(**common, lora_rank=16))
    assert lora["trainable"] < lora["params"] / 100
    assert lora["gib"]["optimizer"] == pytest.approx((4 + 4 + 8) * lora["trainable"] / memory_plan.GIB)
    assert lora["gib"]["parameters"] == pytest.approx(2 * lora["params"] / memory_plan.GIB)
    assert not full["fits"] and lora["fits"]
    with pytest.raises(ValueError, match="--lora-rank trains under --ddp-backend c10d"):
        memory_plan.plan("diffusion_xlmr_xxl", memory_plan.MemorySetup(ddp_backend="fully_sharded", lora_rank=8))
    setup = memory_plan.MemorySetup(checkpoint_activations=True, lora_rank=16)
    counts = memory_plan.smallest_gpu_counts("diffusion_xlmr_xxl", setup)
    assert counts["full"] > 1 and counts["lora"] == 1
    printed = memory_plan.smallest_gpus_table(["diffusion_xlmr_xxl"], setup)
    assert f"| diffusion_xlmr_xxl | {counts['full']} | 1 (each GPU: the whole model) |" in printed


def test_memory_efficient_with_fsdp_and_offloading_without_checkpointing_are_refused():
    with pytest.raises(ValueError, match="--memory-efficient is a DDP option"):
        memory_plan.plan("diffusion_xlmr_tiny", memory_plan.MemorySetup(ddp_backend="fully_sharded", memory_efficient=True))
    with pytest.raises(ValueError, match="--offload-activations needs --checkpoint-activations"):
        memory_plan.plan("diffusion_xlmr_tiny", memory_plan.MemorySetup(offload_activations=True))


@pytest.mark.slow
def test_the_script_prints_the_table_and_refuses_bad_setups_with_exit_code_1():
    common = [sys.executable, "scripts/plan_memory.py", "--arch", "diffusion_xlmr_xxl", "--gpu-memory", "80"]
    result = run([*common, "--gpus", "8", "--checkpoint-activations"])
    assert "| diffusion_xlmr_xxl | 10.711B |" in result.stdout
    assert "8 GPUs x 80 GiB, FSDP, bf16, activation checkpointing" in result.stdout
    refused = run([*common, "--memory-efficient"], ok=False)
    assert refused.returncode == 1
    assert "plan_memory.py: error: --memory-efficient is a DDP option" in refused.stderr
    smallest = run([*common, "--smallest-gpus", "--checkpoint-activations", "--lora-rank", "16"])
    assert "| diffusion_xlmr_xxl |" in smallest.stdout and "1 (each GPU: the whole model)" in smallest.stdout
