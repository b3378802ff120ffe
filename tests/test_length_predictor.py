"""The separately trained length predictor (stage two) and its criterion."""

import pytest
import torch

from helpers import training_cfg
from diffusion_plugin.modules.length_classes import length_targets


@pytest.fixture()
def separate(tiny_data, tiny_task):
    cfg = training_cfg(tiny_data, "--length-predictor", "separate", "--criterion", "length_prediction")
    torch.manual_seed(0)
    return cfg, tiny_task.build_model(cfg.model), tiny_task.build_criterion(cfg.criterion)


def sample(task, count=8):
    dataset = task.dataset("train")
    return dataset.collater([dataset[i] for i in range(count)])


def test_class_k_means_k_plus_one_target_tokens(tiny_task, tiny_model):
    pad, eos = tiny_model.pad, tiny_model.eos
    target = torch.tensor([[7, eos, pad, pad], [7, 8, 9, eos], [7, 8, eos, pad]])
    assert length_targets(target, pad, 16).tolist() == [0, 2, 1]
    long_target = torch.full((1, 40), 7)
    long_target[0, -1] = eos
    assert length_targets(long_target, pad, 16).tolist() == [15]


def test_only_the_predictor_is_trainable_and_the_backbone_stays_unchanged(tiny_task, separate):
    cfg, model, criterion = separate
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("length_predictor.") for name in trainable)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    loss, sample_size, log = criterion(model, sample(tiny_task))
    loss.backward()
    optimizer.step()
    for name, parameter in model.named_parameters():
        changed = not torch.equal(before[name], parameter.detach())
        assert changed == name.startswith("length_predictor."), name
        assert parameter.grad is None or name.startswith("length_predictor.")
    assert sample_size == 8 and 0 <= log["correct"] <= 8


def test_a_diffusion_checkpoint_loads_into_a_separate_predictor_model(tiny_task, tiny_model, separate):
    _, model, _ = separate
    fresh_predictor = {k: v.clone() for k, v in model.length_predictor.state_dict().items()}
    model.load_state_dict(tiny_model.state_dict(), strict=True)
    for key, value in model.length_predictor.state_dict().items():
        assert torch.equal(value, fresh_predictor[key])
    model.eval()
    batch = sample(tiny_task, 4)
    tokens = batch["tokens"]
    positions = batch["target_mask"]
    with torch.no_grad():
        expected = tiny_model.output_layer(tiny_model.extract_features(tokens), positions)
        got = model.output_layer(model.extract_features(tokens), positions)
    assert torch.equal(expected, got)
    logits = model.forward_length(batch["net_input"]["src_tokens"])
    assert logits.shape == (4, model.cfg.length_classes)


def test_each_criterion_rejects_the_other_length_predictor(tiny_task, tiny_model, separate):
    _, model, length_criterion = separate
    diffusion_criterion = tiny_task.build_criterion(training_cfg(tiny_task.cfg.data).criterion)
    with pytest.raises(ValueError, match="--length-predictor joint"):
        diffusion_criterion(model, sample(tiny_task))
    with pytest.raises(ValueError, match="--length-predictor separate"):
        length_criterion(tiny_model, sample(tiny_task))


def test_a_stage_two_checkpoint_with_the_old_joint_head_loads_its_own_predictor(tiny_task, tiny_model, separate):
    """Stage-two checkpoints saved before the joint head was left out of separate models
    carry ``length_head.*`` too; it is dropped on load and the saved predictor kept."""
    _, model, _ = separate
    assert not hasattr(model, "length_head") and hasattr(tiny_model, "length_head")
    torch.manual_seed(1)
    saved = {**tiny_model.state_dict(), **{
        f"length_predictor.{key}": torch.randn_like(value) for key, value in model.length_predictor.state_dict().items()
    }}
    assert any(key.startswith("length_head.") for key in saved)
    model.load_state_dict(dict(saved), strict=True)
    for key, value in model.length_predictor.state_dict().items():
        assert torch.equal(value, saved[f"length_predictor.{key}"])
    assert not any(key.startswith("length_head.") for key in model.state_dict())
