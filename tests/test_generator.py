"""The length-beam iterative generator on a tiny (untrained) model."""

import math

import pytest
import torch

from helpers import batch
from diffusion_plugin.diffusion_generator import DiffusionGenerator
from diffusion_plugin.strategies import ReverseStrategy, example_strategies

STRATEGIES = example_strategies()


def generator(task, **kwargs):
    return DiffusionGenerator(task.target_dictionary, max_positions=64, **kwargs)


def test_committed_tokens_follow_the_cosine_schedule(tiny_task, tiny_model):
    gen = generator(tiny_task, max_iter=5, retain_history=True)
    hypos = gen.generate([tiny_model], batch(tiny_task, range(8)))
    mask = tiny_model.mask
    for sentence in hypos:
        history = sentence[0]["history"]
        n = len(sentence[0]["tokens"]) - 1
        committed = [int(h["tokens"][:-1].ne(mask).sum()) for h in history]
        expected = [0] + [n - math.floor(n * math.cos(math.pi * s / 10)) for s in range(1, len(history))]
        assert committed == expected
        assert len(history) - 1 == sentence[0]["steps"] <= 5


def test_prompt_is_never_touched(tiny_task, tiny_model):
    sample = batch(tiny_task, range(6))
    gen = generator(tiny_task, max_iter=4, decoding_strategy="reparam-uncond-deterministic-cosine")
    prompts = gen.encode_prompts(tiny_model, sample["net_input"]["src_tokens"])
    canvases = gen.canvases(prompts, gen.candidate_lengths(prompts).view(-1))
    prompt = sample["net_input"]["src_tokens"]
    for _ in range(4):
        canvases = gen.step(tiny_model, canvases)
        tokens = canvases.tokens
        for row in range(prompt.size(0)):
            length = int(prompts.lengths[row])
            assert torch.equal(tokens[row, :length], prompt[row, :length])
            end = int(tokens[row].ne(tiny_model.pad).sum()) - 1
            assert tokens[row, end] == tiny_model.eos
    assert not canvases.tokens.eq(tiny_model.mask).any()


@pytest.mark.parametrize("strategy", example_strategies(random=False))
def test_mixed_length_batch_equals_one_sentence_at_a_time(tiny_task, tiny_model, strategy):
    gen = generator(tiny_task, max_iter=6, beam_size=3, decoding_strategy=strategy)
    indices = list(range(12))
    sample = batch(tiny_task, indices)
    assert sample["net_input"]["src_lengths"].unique().numel() > 3, "want mixed prompt lengths"
    together = gen.generate([tiny_model], sample)
    for i, index in enumerate(indices):
        alone = gen.generate([tiny_model], batch(tiny_task, [index]))
        assert len(alone[0]) == len(together[i]) == 3
        for hypo_alone, hypo_together in zip(alone[0], together[i]):
            assert torch.equal(hypo_alone["tokens"], hypo_together["tokens"])
            assert hypo_alone["score"].item() == pytest.approx(hypo_together["score"].item(), abs=1e-5)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_outputs_hold_no_special_symbols_and_follow_the_length_beam(tiny_task, tiny_model, strategy):
    gen = generator(tiny_task, max_iter=3, beam_size=4, decoding_strategy=strategy)
    sample = batch(tiny_task, range(10))
    hypos = gen.generate([tiny_model], sample)
    dictionary = tiny_task.target_dictionary
    special = {tiny_model.mask, dictionary.pad(), dictionary.bos(), dictionary.eos()}
    length_logits = tiny_model.forward_length(sample["net_input"]["src_tokens"])
    beam_lengths = length_logits.topk(4, dim=-1).indices + 1  # class k: k + 1 tokens
    for row, sentence in enumerate(hypos):
        assert len(sentence) == 4
        for hypo in sentence:
            body = hypo["tokens"][:-1].tolist()
            assert hypo["tokens"][-1] == dictionary.eos()
            assert not special & set(body)
            assert hypo["score"].item() == pytest.approx(hypo["positional_scores"][:-1].mean().item())
        scores = [h["score"].item() for h in sentence]
        assert scores == sorted(scores, reverse=True)
        assert sorted(len(h["tokens"]) - 1 for h in sentence) == sorted(beam_lengths[row].tolist())


def test_lengths_are_clipped_to_the_room_after_the_prompt(tiny_task, tiny_model):
    sample = batch(tiny_task, range(4))
    longest_prompt = int(sample["net_input"]["src_lengths"].max())
    gen = DiffusionGenerator(tiny_task.target_dictionary, max_iter=2, beam_size=2, max_positions=longest_prompt + 3)
    for sentence, prompt_length in zip(gen.generate([tiny_model], sample), sample["net_input"]["src_lengths"]):
        for hypo in sentence:
            assert int(prompt_length) + len(hypo["tokens"]) <= longest_prompt + 3
    gen = DiffusionGenerator(tiny_task.target_dictionary, max_positions=longest_prompt)
    with pytest.raises(ValueError, match="leaves no room"):
        gen.generate([tiny_model], sample)


def test_invalid_generator_options(tiny_task):
    with pytest.raises(ValueError, match="--iter-decode-max-iter"):
        DiffusionGenerator(tiny_task.target_dictionary, max_iter=0)
    with pytest.raises(ValueError, match="--iter-decode-with-beam"):
        DiffusionGenerator(tiny_task.target_dictionary, beam_size=0)


def emptied(sample, rows, dictionary):
    """``sample`` with the targets of ``rows`` made empty (``</s>`` alone)."""
    target = sample["target"].clone()
    target[rows] = dictionary.pad()
    target[rows, 0] = dictionary.eos()
    return dict(sample, target=target)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_targets_decode_to_an_empty_canvas_under_the_oracle_length(tiny_task, tiny_model, strategy):
    dictionary = tiny_task.target_dictionary
    gen = generator(tiny_task, max_iter=4, beam_size=2, oracle_length=True, decoding_strategy=strategy)
    sample = batch(tiny_task, range(6))
    torch.manual_seed(0)
    mixed = gen.generate([tiny_model], emptied(sample, [0, 3], dictionary))
    torch.manual_seed(0)
    alone = gen.generate([tiny_model], batch(tiny_task, [1, 2, 4, 5]))
    for row in (0, 3):
        for hypo in mixed[row]:
            assert hypo["tokens"].tolist() == [dictionary.eos()] and hypo["score"].item() == 0.0
    if not ReverseStrategy.parse(strategy).random:  # the other rows decode as they do without the empty ones
        for row, other in zip((1, 2, 4, 5), alone):
            assert [h["tokens"].tolist() for h in mixed[row]] == [h["tokens"].tolist() for h in other]
    everything = gen.generate([tiny_model], emptied(sample, list(range(6)), dictionary))
    assert all(h["tokens"].tolist() == [dictionary.eos()] for sentence in everything for h in sentence)


def test_a_prompt_that_fills_every_position_decodes_an_empty_target(tiny_task, tiny_model):
    dictionary = tiny_task.target_dictionary
    sample = emptied(batch(tiny_task, range(4)), [0, 1, 2, 3], dictionary)
    longest = int(sample["net_input"]["src_lengths"].max())
    gen = DiffusionGenerator(dictionary, max_iter=2, oracle_length=True, max_positions=longest + 1)
    assert all(s[0]["tokens"].tolist() == [dictionary.eos()] for s in gen.generate([tiny_model], sample))


def test_joint_selection_ranks_by_tokens_and_length_per_factor(tiny_task, tiny_model):
    sample = batch(tiny_task, range(8))
    joint = generator(tiny_task, max_iter=3, beam_size=4, candidate_selection="joint")
    plain = generator(tiny_task, max_iter=3, beam_size=4)
    with torch.no_grad():
        length_log_probs = tiny_model.forward_length(sample["net_input"]["src_tokens"]).float().log_softmax(-1)
    for row, (ranked, by_score) in enumerate(zip(joint.generate([tiny_model], sample),
                                                 plain.generate([tiny_model], sample))):
        assert sorted(h["tokens"].tolist() for h in ranked) == sorted(h["tokens"].tolist() for h in by_score)
        values = []
        for hypo in ranked:
            length = len(hypo["tokens"]) - 1
            log_p_length = float(length_log_probs[row, length - 1])
            assert float(hypo["length_score"]) == pytest.approx(log_p_length, abs=1e-5)
            values.append((float(hypo["positional_scores"][:-1].sum()) + log_p_length) / (length + 1))
        assert values == sorted(values, reverse=True)


def test_collapse_repeats_drops_adjacent_repeats_after_ranking(tiny_task, tiny_model):
    sample = batch(tiny_task, range(16))
    plain = generator(tiny_task, max_iter=2, beam_size=2).generate([tiny_model], sample)
    collapsed = generator(tiny_task, max_iter=2, beam_size=2, collapse_repeats=True).generate([tiny_model], sample)
    repeats = 0
    for before_sentence, after_sentence in zip(plain, collapsed):
        for before, after in zip(before_sentence, after_sentence):
            tokens = before["tokens"].tolist()
            body = [t for i, t in enumerate(tokens[:-1]) if i == 0 or t != tokens[i - 1]]
            repeats += len(tokens) - 1 - len(body)
            assert after["tokens"].tolist() == body + [tokens[-1]]
            assert after["positional_scores"].numel() == len(body) + 1
            assert float(after["score"]) == float(before["score"])
    assert repeats > 0, "the untrained model should repeat tokens somewhere"
