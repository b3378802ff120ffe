"""scripts/plan_memory.py (diffusion_plugin.memory_plan): its parameter counts are the
models' own, and its table."""

import argparse

import pytest
import torch
from fairseq.data import Dictionary

from helpers import load_script
from diffusion_plugin import memory_plan
from diffusion_plugin.models.diffusion_xlmr import DiffusionXLMRConfig, DiffusionXLMRModel

plan_memory = load_script("plan_memory")


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


def test_fsdp_shards_the_optimizer_state_and_checkpointing_saves_activations(capsys):
    common = ["--arch", "diffusion_xlmr_xxl", "--precision", "bf16", "--gpu-memory", "80"]
    ddp, = plan_memory.main([*common, "--ddp-backend", "c10d"])
    fsdp, = plan_memory.main([*common, "--ddp-backend", "fully_sharded", "--gpus", "8"])
    fsdp_ckpt, = plan_memory.main([*common, "--gpus", "8", "--checkpoint-activations"])
    params = fsdp["params"]
    # DDP bf16: fp32 master weights and gradients + two Adam moments on every GPU;
    # FSDP: the two Adam moments sharded over 8 GPUs
    assert ddp["gib"]["optimizer"] == pytest.approx((4 + 4 + 8) * params / memory_plan.GIB)
    assert fsdp["gib"]["optimizer"] == pytest.approx(8 * params / 8 / memory_plan.GIB)
    assert fsdp_ckpt["gib"]["activations"] < fsdp["gib"]["activations"] / 5
    assert not ddp["fits"] and fsdp_ckpt["fits"]
    printed = capsys.readouterr().out
    assert "| diffusion_xlmr_xxl | 10.711B |" in printed and "8 GPUs x 80 GiB, FSDP, bf16" in printed


def test_memory_efficient_with_fsdp_is_refused():
    with pytest.raises(SystemExit, match="--memory-efficient is a DDP option"):
        plan_memory.main(["--ddp-backend", "fully_sharded", "--memory-efficient"])
