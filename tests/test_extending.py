"""A decoding strategy and a noise schedule added from outside the package, as
docs/ARCHITECTURE.md's "Extending" says: each is one registered entry, and the option
help, validation, the option docs, the tests' strategy lists, training and decoding
pick it up."""

import argparse
import math
from dataclasses import dataclass

import pytest
import torch
from fairseq import checkpoint_utils, tasks
from fairseq.dataclass.utils import gen_parser_from_dataclass

from helpers import batch, save_checkpoint, training_cfg
from diffusion_plugin import options
from diffusion_plugin.absorbing_diffusion import AbsorbingDiffusion
from diffusion_plugin.decoding_config import DecodingConfig
from diffusion_plugin.diffusion_generator import DiffusionGenerator
from diffusion_plugin.schedules import NOISE_SCHEDULES, num_masked_after, register_noise_schedule
from diffusion_plugin.strategies import (
    STRATEGIES,
    ReverseStrategy,
    example_strategies,
    lowest,
    register_strategy,
)


@dataclass(frozen=True)
class LeftToRight(ReverseStrategy):
    """Commits the leftmost masked positions, the linear schedule's count per step."""

    grammar = "ltr"
    summary = "leftmost first"
    examples = ("ltr",)

    @classmethod
    def from_name(cls, name):
        return cls() if name == "ltr" else None

    def select(self, inputs):
        num_masked = num_masked_after(inputs.decodable.sum(1), inputs.step, inputs.max_step, "linear")
        positions = torch.arange(inputs.tokens.size(1)).expand_as(inputs.tokens)
        stays_masked = lowest(-positions, inputs.masked, num_masked)  # the rightmost stay
        return torch.zeros_like(inputs.decodable), inputs.masked & ~stays_masked


@pytest.fixture()
def left_to_right():
    register_strategy("ltr")(LeftToRight)
    yield
    del STRATEGIES["ltr"]


@pytest.fixture()
def square_schedule():
    register_noise_schedule("square")(lambda t, T: (1 - (T - t) / T) ** 2)
    yield
    del NOISE_SCHEDULES["square"]


def test_a_registered_strategy_reaches_help_validation_docs_and_the_test_lists(left_to_right):
    assert isinstance(ReverseStrategy.parse("ltr"), LeftToRight)
    parser = argparse.ArgumentParser()
    gen_parser_from_dataclass(parser, DecodingConfig())
    assert "ltr: leftmost first" in " ".join(parser.format_help().split())
    rows = {flag: help_text for _, group in options.options() for flag, _, _, help_text in group}
    assert "ltr: leftmost first" in rows["--decoding-strategy"]
    assert isinstance(DecodingConfig(decoding_strategy="ltr").validate(), LeftToRight)
    with pytest.raises(ValueError, match="does not rank by confidence"):
        DecodingConfig(decoding_strategy="ltr", unmasking_confidence="margin").validate()
    assert "ltr" in example_strategies() and "ltr" in example_strategies(random=False)


def test_a_registered_strategy_decodes(left_to_right, tiny_task, tiny_model):
    gen = DiffusionGenerator(tiny_task.target_dictionary, max_positions=64, max_iter=3,
                             decoding_strategy="ltr", retain_history=True)
    for sentence in gen.generate([tiny_model], batch(tiny_task, range(6))):
        history = [h["tokens"][:-1].eq(tiny_model.mask) for h in sentence[0]["history"]]
        for masked in history:  # the masks are always a suffix of the target
            assert masked.long().diff().ge(0).all()
        assert not history[-1].any()


def test_an_unregistered_kind_is_an_error():
    with pytest.raises(ValueError, match="--decoding-strategy 'ltr' is not understood"):
        ReverseStrategy.parse("ltr")
    with pytest.raises(ValueError, match="--noise-schedule 'square' is not registered"):
        AbsorbingDiffusion(3, 10, "square")


def test_a_registered_schedule_trains_and_decodes(square_schedule, tiny_data, tiny_task, tiny_model):
    cfg = training_cfg(tiny_data, "--noise-schedule", "square")
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    criterion = task.build_criterion(cfg.criterion)
    assert criterion.diffusion.schedule == "square"
    torch.manual_seed(0)
    loss, sample_size, log = criterion(task.build_model(cfg.model), batch(task, range(8), "train"))
    assert torch.isfinite(loss) and loss > 0 and sample_size == 16
    gen = DiffusionGenerator(tiny_task.target_dictionary, max_positions=64, max_iter=4, retain_history=True,
                             decoding_strategy="reparam-uncond-deterministic-square")
    for sentence in gen.generate([tiny_model], batch(tiny_task, range(4))):
        n = len(sentence[0]["tokens"]) - 1
        masked = [int(h["tokens"][:-1].eq(tiny_model.mask).sum()) for h in sentence[0]["history"]]
        assert masked == [n] + [math.floor(n * (1 - s / 4) ** 2) for s in range(1, len(masked))]


def test_the_forward_masking_rate_follows_the_schedule(square_schedule):
    torch.manual_seed(0)
    x0, maskable = torch.randint(4, 50, (4000, 40)), torch.ones(4000, 40, dtype=torch.bool)
    for schedule, rate in (("cosine", lambda f: math.sin(math.pi * f / 2)), ("square", lambda f: f * f)):
        diffusion = AbsorbingDiffusion(99, 20, schedule)
        for t in (1, 5, 10, 19):
            _, masked = diffusion.q_sample(x0, maskable, torch.full((4000,), t))
            assert abs(masked.float().mean().item() - rate(t / 20)) < 0.01
        _, masked, t = diffusion.q_sample_coupled(x0, maskable)
        nested = t[:4000] > t[4000:]
        assert not (masked[4000:][nested] & ~masked[:4000][nested]).any()
        ratio_b = masked[4000:].float().mean(1)
        assert abs((ratio_b - torch.tensor([rate(v / 20) for v in t[4000:].tolist()])).mean()) < 0.01


def test_the_elbo_weight_is_the_schedules():
    t = torch.arange(1, 11)
    linear = AbsorbingDiffusion(99, 10, "linear").loss_weight(t, "elbo")
    assert linear.tolist() == pytest.approx((10 / t.double()).tolist(), rel=1e-7)  # T / t, rounded once
    cosine = AbsorbingDiffusion(99, 10, "cosine").loss_weight(t, "elbo")
    rate = [math.sin(math.pi * v / 20) for v in range(11)]
    assert cosine.tolist() == pytest.approx([10 * (rate[v] - rate[v - 1]) / rate[v] for v in range(1, 11)])
    assert AbsorbingDiffusion(99, 10, "cosine").loss_weight(t, "linear").tolist() == linear.new_tensor(
        [11 - v for v in range(1, 11)]).tolist()


def test_the_noise_schedule_is_stored_with_the_checkpoint(tiny_data, tmp_path):
    cfg = training_cfg(tiny_data, "--noise-schedule", "cosine", "--optimizer", "adam", "--lr", "1e-3")
    path = save_checkpoint(cfg, tmp_path / "checkpoint.pt")
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert state["cfg"]["criterion"]["noise_schedule"] == "cosine"
    assert training_cfg(tiny_data).criterion.noise_schedule == "linear"
