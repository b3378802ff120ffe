"""--bf16-autocast: bf16 autocast on CPU stays close to fp32 in training and decoding,
acts on the model's device, and checkpoints with the old --cpu-bf16 / --cuda-bf16 load."""

import copy

import pytest
import torch
from fairseq import checkpoint_utils

from helpers import save_checkpoint, training_cfg
from diffusion_plugin.criterions.masked_diffusion import MaskedDiffusionCriterion
from diffusion_plugin.diffusion_generator import DiffusionGenerator


def test_bf16_loss_and_gradients_are_close_to_fp32(tiny_task, tiny_cfg, tiny_model):
    criterion = MaskedDiffusionCriterion(tiny_cfg.criterion, tiny_task)
    dataset = tiny_task.dataset("valid")
    sample = dataset.collater([dataset[i] for i in range(16)])
    bf16_model = copy.deepcopy(tiny_model)
    bf16_model.cfg.bf16_autocast = True
    losses, grads = [], []
    for model in (tiny_model, bf16_model):
        torch.manual_seed(0)
        loss, _, _ = criterion(model, sample)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert all(torch.isfinite(torch.tensor(losses)))
    # stated tolerance: 2% on the loss, cosine similarity > 0.99 on the gradient
    assert abs(losses[1] - losses[0]) / losses[0] < 0.02
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99


def test_bf16_decoding_is_finite_and_mostly_agrees_with_fp32(tiny_task, tiny_model):
    dataset = tiny_task.dataset("test")
    sample = dataset.collater([dataset[i] for i in range(20)])
    generator = DiffusionGenerator(tiny_task.target_dictionary, max_iter=4, beam_size=2, max_positions=64)
    fp32 = generator.generate([tiny_model], sample)
    bf16_model = copy.deepcopy(tiny_model)
    bf16_model.cfg.bf16_autocast = True
    bf16 = generator.generate([bf16_model], sample)
    agree = total = 0
    for a, b in zip(fp32, bf16):
        assert torch.isfinite(b[0]["positional_scores"]).all()
        if len(a[0]["tokens"]) == len(b[0]["tokens"]):
            agree += int((a[0]["tokens"] == b[0]["tokens"]).sum())
            total += len(a[0]["tokens"])
    # stated tolerance: at least 80% of the tokens of equal-length outputs agree
    assert total > 0 and agree / total > 0.8


def test_bf16_logits_are_close_to_fp32(tiny_task, tiny_model):
    dataset = tiny_task.dataset("test")
    tokens = dataset.collater([dataset[i] for i in range(8)])["net_input"]["src_tokens"]
    positions = tokens.ne(tiny_model.pad)
    with torch.no_grad():
        fp32 = tiny_model.output_layer(tiny_model.extract_features(tokens), positions)
        bf16_model = copy.deepcopy(tiny_model)
        bf16_model.cfg.bf16_autocast = True
        bf16 = bf16_model.output_layer(bf16_model.extract_features(tokens), positions)
    assert not torch.equal(bf16, fp32)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    # stated tolerance: log-probabilities within 0.1 nats of fp32's at every position
    difference = (bf16.log_softmax(-1) - fp32.log_softmax(-1)).abs().max()
    assert difference < 0.1


def test_the_flag_acts_on_the_models_device(tiny_model):
    for device in ["cpu"] + ["cuda"] * torch.cuda.is_available():
        assert not tiny_model.bf16_autocast(torch.device(device))._enabled
        tiny_model.cfg.bf16_autocast = True
        autocast = tiny_model.bf16_autocast(torch.device(device))
        assert autocast._enabled and autocast.device == device and autocast.fast_dtype == torch.bfloat16
        tiny_model.cfg.bf16_autocast = False


@pytest.mark.parametrize("native", [False, True])
def test_a_cpu_without_native_bf16_gets_one_warning(tiny_model, monkeypatch, caplog, native):
    from diffusion_plugin.models import diffusion_xlmr

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    diffusion_xlmr.warn_without_native_cpu_bf16.cache_clear()
    tiny_model.cfg.bf16_autocast = True
    try:
        with caplog.at_level("WARNING", logger=diffusion_xlmr.__name__):
            for _ in range(3):
                tiny_model.bf16_autocast(torch.device("cpu"))
    finally:
        tiny_model.cfg.bf16_autocast = False
        diffusion_xlmr.warn_without_native_cpu_bf16.cache_clear()
    warnings = [r for r in caplog.records if "without native bf16" in r.getMessage()]
    assert len(warnings) == (0 if native else 1)
    if warnings:
        assert "drop --bf16-autocast" in warnings[0].getMessage()


@pytest.mark.parametrize(
    "saved, overrides, expected",
    [
        ({"cpu_bf16": True, "cuda_bf16": False}, None, True),
        ({"cpu_bf16": False, "cuda_bf16": True}, None, True),
        ({"cpu_bf16": False}, None, False),  # before cuda_bf16 existed
        ({"cpu_bf16": True, "cuda_bf16": False}, {"bf16_autocast": False}, False),
        ({"cpu_bf16": False, "cuda_bf16": False}, {"cpu_bf16": True}, True),
        ({}, {"cuda_bf16": True}, True),  # a new checkpoint, an old override
    ],
)
def test_checkpoints_with_the_old_two_flags_load(tiny_data, tmp_path, saved, overrides, expected):
    path = save_checkpoint(training_cfg(tiny_data, "--optimizer", "adam", "--lr", "1e-3"), tmp_path / "old.pt")
    state = torch.load(path, weights_only=False)
    if saved:
        del state["cfg"]["model"]["bf16_autocast"]
        state["cfg"]["model"].update(saved)
    torch.save(state, path)
    models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides=overrides)
    assert models[0].cfg.bf16_autocast is expected
    assert "cpu_bf16" not in models[0].cfg and "cuda_bf16" not in models[0].cfg
