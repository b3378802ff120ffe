"""The forward process (masking, coupled draws, weights) and the reverse schedule."""

import math

import pytest
import torch

from diffusion_plugin.absorbing_diffusion import AbsorbingDiffusion
from diffusion_plugin.schedules import num_masked_after
from diffusion_plugin.strategies import ReverseStrategy

MASK = 99


def rows(batch, length, prompt=3):
    x0 = torch.randint(4, 50, (batch, length))
    maskable = torch.zeros(batch, length, dtype=torch.bool)
    maskable[:, prompt:] = True
    return x0, maskable


@pytest.mark.parametrize("t", [1, 10, 25, 40, 50])
def test_mask_ratio_tracks_t_over_T(t):
    torch.manual_seed(0)
    diffusion = AbsorbingDiffusion(MASK, num_steps=50)
    x0, maskable = rows(4000, 53)
    x_t, masked = diffusion.q_sample(x0, maskable, torch.full((4000,), t))
    ratio = masked.sum().item() / maskable.sum().item()
    assert abs(ratio - t / 50) < 0.01
    assert not masked[~maskable].any(), "prompt positions must never be masked"
    assert torch.equal(x_t.eq(MASK), masked)
    assert torch.equal(x_t[~masked], x0[~masked])


def test_coupled_masks_are_nested_and_track_both_times():
    torch.manual_seed(0)
    diffusion = AbsorbingDiffusion(MASK, num_steps=50)
    batch = 20000
    x0, maskable = rows(batch, 43)
    x_t, masked, t = diffusion.q_sample_coupled(x0, maskable)
    assert x_t.shape == (2 * batch, 43) and t.shape == (2 * batch,)
    t_a, t_b = t[:batch], t[batch:]
    masked_a, masked_b = masked[:batch], masked[batch:]
    assert (t_a >= t_b).all() and t.min() >= 1 and t.max() <= 50
    nested = t_a > t_b
    assert not (masked_b[nested] & ~masked_a[nested]).any(), "x_tb must be a sub-mask of x_ta"
    assert not masked[:, :3].any()
    # each copy's marginal mask ratio is t/T for its own t
    for copy_t, copy_masked in ((t_a, masked_a), (t_b, masked_b)):
        ratios = copy_masked.sum(1).float() / 40
        predicted = copy_t.float() / 50
        assert abs((ratios - predicted).mean().item()) < 0.005
    # t_a == t_b: an independent draw, not a copy
    equal = (t_a == t_b).nonzero().view(-1)
    assert len(equal) > 100
    assert not torch.equal(masked_a[equal], masked_b[equal])


def test_time_sampling_is_uniform_over_1_to_T():
    torch.manual_seed(0)
    diffusion = AbsorbingDiffusion(MASK, num_steps=5)
    counts = torch.bincount(diffusion.sample_time(50000), minlength=6)
    assert counts[0] == 0
    assert ((counts[1:].float() / 50000 - 0.2).abs() < 0.01).all()


def test_loss_weights():
    diffusion = AbsorbingDiffusion(MASK, num_steps=50)
    t = torch.tensor([1, 2, 25, 50])
    assert diffusion.loss_weight(t, "linear").tolist() == [50.0, 49.0, 26.0, 1.0]
    assert diffusion.loss_weight(t, "constant").tolist() == [50.0] * 4
    assert diffusion.loss_weight(t, "elbo").tolist() == [50.0, 25.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="unknown weighting"):
        diffusion.loss_weight(t, "cubic")


def test_cosine_and_linear_schedules():
    n = torch.tensor([10, 7, 1])
    for step in range(1, 5):
        got = num_masked_after(n, step, 4, "cosine").tolist()
        assert got == [math.floor(v * math.cos(math.pi * step / 8)) for v in (10, 7, 1)]
        got = num_masked_after(n, step, 4, "linear").tolist()
        assert got == [math.floor(v * (1 - step / 4)) for v in (10, 7, 1)]
    assert num_masked_after(n, 4, 4, "cosine").tolist() == [0, 0, 0]


@pytest.mark.parametrize("strategy", ["reparam-uncond-deterministic-cosine", "reparam-uncond-stochastic1.0-linear"])
def test_uncond_reverse_step_leaves_exactly_the_scheduled_masks(strategy):
    torch.manual_seed(0)
    parsed = ReverseStrategy.parse(strategy)
    decodable = torch.zeros(3, 12, dtype=torch.bool)
    decodable[0, 2:11] = True
    decodable[1, 4:7] = True
    decodable[2, 1:11] = True
    tokens = torch.where(decodable, torch.full((3, 12), MASK), torch.full((3, 12), 5))
    scores = torch.zeros(3, 12).masked_fill(decodable, float("-inf"))
    steps = 6
    for step in range(1, steps + 1):
        proposal = torch.randint(10, 20, (3, 12))
        proposal_scores = -torch.rand(3, 12)
        tokens, scores = parsed.reverse_step(
            tokens, scores, decodable, proposal, proposal_scores, step, steps, MASK
        )
        expected = num_masked_after(decodable.sum(1), step, steps, parsed.schedule)
        assert torch.equal(tokens.eq(MASK).sum(1), expected)
        assert (tokens[~decodable] == 5).all(), "non-decodable positions are never touched"
        assert torch.isinf(scores[tokens.eq(MASK)]).all()
    assert not tokens.eq(MASK).any()


def test_cond_reverse_step_never_masks_more_than_the_schedule():
    torch.manual_seed(1)
    parsed = ReverseStrategy.parse("reparam-cond-deterministic-cosine")
    decodable = torch.ones(4, 9, dtype=torch.bool)
    tokens = torch.full((4, 9), MASK)
    scores = torch.full((4, 9), float("-inf"))
    for step in range(1, 6):
        proposal = torch.randint(10, 13, (4, 9))
        tokens, scores = parsed.reverse_step(
            tokens, scores, decodable, proposal, -torch.rand(4, 9), step, 5, MASK
        )
        limit = num_masked_after(decodable.sum(1), step, 5, "cosine")
        assert (tokens.eq(MASK).sum(1) <= limit).all()
    assert not tokens.eq(MASK).any()


@pytest.mark.parametrize("name", ["reparam-uncond", "cmlm", "reparam-x-deterministic-cosine", "reparam-cond-stochastic-cosine"])
def test_bad_strategy_names_are_rejected(name):
    with pytest.raises(ValueError, match="--decoding-strategy"):
        ReverseStrategy.parse(name)
