"""--cpu-bf16: bf16 autocast on CPU stays close to fp32 in training and decoding."""

import copy

import torch

from diffusion_plugin.criterions.masked_diffusion import MaskedDiffusionCriterion
from diffusion_plugin.diffusion_generator import DiffusionGenerator


def test_bf16_loss_and_gradients_are_close_to_fp32(tiny_task, tiny_cfg, tiny_model):
    criterion = MaskedDiffusionCriterion(tiny_cfg.criterion, tiny_task)
    dataset = tiny_task.dataset("valid")
    sample = dataset.collater([dataset[i] for i in range(16)])
    bf16_model = copy.deepcopy(tiny_model)
    bf16_model.cfg.cpu_bf16 = True
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
    bf16_model.cfg.cpu_bf16 = True
    bf16 = generator.generate([bf16_model], sample)
    agree = total = 0
    for a, b in zip(fp32, bf16):
        assert torch.isfinite(b[0]["positional_scores"]).all()
        if len(a[0]["tokens"]) == len(b[0]["tokens"]):
            agree += int((a[0]["tokens"] == b[0]["tokens"]).sum())
            total += len(a[0]["tokens"])
    # stated tolerance: at least 80% of the tokens of equal-length outputs agree
    assert total > 0 and agree / total > 0.8


def test_bf16_logits_are_close_to_fp32_and_cuda_bf16_leaves_cpu_in_fp32(tiny_task, tiny_model):
    dataset = tiny_task.dataset("test")
    tokens = dataset.collater([dataset[i] for i in range(8)])["net_input"]["src_tokens"]
    positions = tokens.ne(tiny_model.pad)
    with torch.no_grad():
        fp32 = tiny_model.output_layer(tiny_model.extract_features(tokens), positions)
        cuda_only = copy.deepcopy(tiny_model)
        cuda_only.cfg.cuda_bf16 = True
        assert torch.equal(cuda_only.output_layer(cuda_only.extract_features(tokens), positions), fp32)
        bf16_model = copy.deepcopy(tiny_model)
        bf16_model.cfg.cpu_bf16 = True
        bf16 = bf16_model.output_layer(bf16_model.extract_features(tokens), positions)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    # stated tolerance: log-probabilities within 0.1 nats of fp32's at every position
    difference = (bf16.log_softmax(-1) - fp32.log_softmax(-1)).abs().max()
    assert difference < 0.1
