"""Decoding speed options: each exact one changes no token; the prompt cache is exact
with prefix attention and with a cache refreshed every step."""

from dataclasses import fields, is_dataclass

import pytest
import torch
from fairseq import tasks

from helpers import batch, training_cfg
from diffusion_plugin.diffusion_generator import DiffusionGenerator
from diffusion_plugin.decoding_config import decoding_config
from diffusion_plugin.modules.prompt_cache import PromptCache, target_features
from diffusion_plugin.strategies import example_strategies
from benchmarks.variants import MeasuredGenerator

STRATEGIES = example_strategies()


def decode(task, model, sample, generator_class=DiffusionGenerator, **kwargs):
    """Token lists and step counts of every candidate, best-first, seeded."""
    torch.manual_seed(0)
    options = dict(max_iter=6, beam_size=3) | kwargs
    gen = generator_class(task.target_dictionary, max_positions=64, **options)
    return [
        [(h["tokens"].tolist(), h["steps"]) for h in sentence]
        for sentence in gen.generate([model], sample)
    ]


@pytest.fixture(scope="module")
def prefix_model(tiny_data):
    cfg = training_cfg(tiny_data, "--prompt-attention", "prefix")
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(0)
    return task.build_model(cfg.model).eval()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_lm_head_positions_change_no_token(tiny_task, tiny_model, strategy):
    sample = batch(tiny_task, range(8))
    undecided = decode(tiny_task, tiny_model, sample, decoding_strategy=strategy)
    for positions in ("target", "all"):
        assert decode(
            tiny_task, tiny_model, sample, MeasuredGenerator, decoding_strategy=strategy, lm_head_positions=positions
        ) == undecided


def test_undecided_positions_skip_committed_tokens_unless_the_strategy_revises_them(tiny_task, tiny_model):
    sample = batch(tiny_task, range(4))
    rows = []
    head = tiny_model.encoder.lm_head
    handle = head.register_forward_hook(lambda module, args, out: rows.append(out.size(0)))
    try:
        for name in ("threshold0.05", "reparam-uncond-deterministic-cosine"):
            gen = DiffusionGenerator(tiny_task.target_dictionary, max_iter=4, decoding_strategy=name)
            prompts = gen.encode_prompts(tiny_model, sample["net_input"]["src_tokens"])
            step = gen.step(tiny_model, gen.canvases(prompts, gen.candidate_lengths(prompts).view(-1)))
            masked = int(step.tokens.eq(tiny_model.mask).sum())
            rows.clear()
            gen.step(tiny_model, step)
            decodable = gen.decodable_positions(step.tokens, prompts.lengths)
            assert rows == [masked if name.startswith("threshold") else int(decodable.sum())]
    finally:
        handle.remove()
    assert masked < int(decodable.sum())


@pytest.mark.parametrize("strategy", ["reparam-uncond-deterministic-linear", "threshold0.05"])
def test_dropping_finished_canvases_and_batching_candidates_change_no_token(tiny_task, tiny_model, strategy):
    sample = batch(tiny_task, range(8))
    default = decode(tiny_task, tiny_model, sample, decoding_strategy=strategy)
    assert any(steps < 6 for sentence in default for _, steps in sentence)
    for finished in ("half", "drop"):
        assert decode(tiny_task, tiny_model, sample, MeasuredGenerator, decoding_strategy=strategy,
                      finished=finished) == default
    for grouping in ("one forward", "per slot"):
        assert decode(tiny_task, tiny_model, sample, MeasuredGenerator, decoding_strategy=strategy,
                      length_candidates=grouping) == default


def test_candidates_go_one_slot_at_a_time_past_rows_per_forward(tiny_task):
    generator = DiffusionGenerator(tiny_task.target_dictionary, beam_size=3)
    few, many = torch.arange(3 * 4), torch.arange(3 * 40)
    assert generator.candidate_groups(few, 4).tolist() == [few.tolist()]
    slots = generator.candidate_groups(many, 40)
    assert slots.shape == (3, 40) and slots[1].tolist() == list(range(1, 120, 3))


def test_finished_canvases_stay_by_default_and_leave_by_the_variants_rules(tiny_task):
    one_done, half_done = torch.tensor([True, False, False, False]), torch.tensor([True, True, False, False])
    default = DiffusionGenerator(tiny_task.target_dictionary)
    assert default.leave_batch(one_done) is None and default.leave_batch(half_done) is None
    half = MeasuredGenerator(tiny_task.target_dictionary, finished="half")
    assert half.leave_batch(one_done) is None
    assert half.leave_batch(half_done).tolist() == [2, 3]
    drop = MeasuredGenerator(tiny_task.target_dictionary, finished="drop")
    assert drop.leave_batch(one_done).tolist() == [1, 2, 3]


def test_prefix_attention_keeps_the_prompt_blind_to_the_target(tiny_task, prefix_model, tiny_model):
    sample = batch(tiny_task, range(4))
    src_tokens = sample["net_input"]["src_tokens"]
    gen = DiffusionGenerator(tiny_task.target_dictionary)
    prompts = gen.encode_prompts(prefix_model, src_tokens)
    canvas = gen.canvases(prompts, gen.candidate_lengths(prompts).view(-1)).tokens
    decodable = gen.decodable_positions(canvas, prompts.lengths)
    changed = canvas.masked_fill(decodable, 7)
    prompt = ~decodable & canvas.ne(prefix_model.pad) & (
        torch.arange(canvas.size(1)) < prompts.lengths.unsqueeze(1)
    )
    for model, blind in ((prefix_model, True), (tiny_model, False)):
        lengths = prompts.lengths
        before = model.extract_features(canvas, lengths)[prompt]
        after = model.extract_features(changed, lengths)[prompt]
        assert torch.allclose(before, after, atol=1e-5) == blind
    alone = prefix_model.extract_features(src_tokens)[src_tokens.ne(prefix_model.pad)]
    assert torch.allclose(prefix_model.extract_features(canvas, lengths)[prompt], alone, atol=1e-5)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_prompt_cache_is_exact_with_prefix_attention(tiny_task, prefix_model, strategy):
    sample = batch(tiny_task, range(8))
    uncached = decode(tiny_task, prefix_model, sample, decoding_strategy=strategy)
    assert decode(tiny_task, prefix_model, sample, decoding_strategy=strategy, prompt_cache=True) == uncached


def test_cached_target_features_match_a_full_pass(tiny_task, tiny_model):
    sample = batch(tiny_task, range(6))
    src_tokens = sample["net_input"]["src_tokens"]
    gen = DiffusionGenerator(tiny_task.target_dictionary)
    prompts = gen.encode_prompts(tiny_model, src_tokens)
    canvas = gen.canvases(prompts, gen.candidate_lengths(prompts).view(-1)).tokens
    lengths = prompts.lengths
    full, layer_inputs = tiny_model.encode(canvas, lengths)
    cache = PromptCache.from_layer_inputs(layer_inputs, lengths, src_tokens.size(1))
    cached, index, padding = target_features(tiny_model.encoder.sentence_encoder, canvas, lengths, cache, tiny_model.pad)
    expected = full.gather(1, index.unsqueeze(-1).expand_as(cached))
    assert torch.allclose(cached[~padding], expected[~padding], atol=1e-5)
    assert int((~padding).sum()) == int((canvas.ne(tiny_model.pad).sum(1) - lengths).sum())


def test_full_attention_cache_refreshed_every_step_is_exact_and_stale_cache_still_decodes(tiny_task, tiny_model):
    sample = batch(tiny_task, range(8))
    uncached = decode(tiny_task, tiny_model, sample)
    assert decode(tiny_task, tiny_model, sample, prompt_cache=True, prompt_cache_refresh=1) == uncached
    stale = decode(tiny_task, tiny_model, sample, prompt_cache=True, prompt_cache_refresh=3)
    special = {tiny_model.mask, tiny_model.pad, tiny_task.target_dictionary.bos()}
    for sentence, reference in zip(stale, uncached):
        assert sorted(len(t) for t, _ in sentence) == sorted(len(t) for t, _ in reference)
        assert all(not special & set(tokens) for tokens, _ in sentence)


def test_prefix_attention_trains(tiny_data):
    cfg = training_cfg(tiny_data, "--prompt-attention", "prefix")
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    torch.manual_seed(0)
    model = task.build_model(cfg.model).train()
    criterion = task.build_criterion(cfg.criterion)
    dataset = task.dataset("train")
    sample = dataset.collater([dataset[i] for i in range(8)])
    loss, _, _ = criterion(model, sample)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.encoder.sentence_encoder.layers[0].self_attn.k_proj.weight.grad.abs().sum() > 0


def test_speed_options_reach_the_generator_and_bad_ones_name_their_flag(tiny_task):
    class Args:
        prompt_cache = True
        prompt_cache_refresh = 2

    options = decoding_config(tiny_task.cfg, Args())
    assert options.prompt_cache and options.prompt_cache_refresh == 2
    dictionary = tiny_task.target_dictionary
    with pytest.raises(ValueError, match="lm_head_positions"):
        MeasuredGenerator(dictionary, lm_head_positions="masked")
    with pytest.raises(TypeError):  # measurement variants are no option of the plugin's generator
        DiffusionGenerator(dictionary, lm_head_positions="all")
    flags = {f.name for f in fields(type(tiny_task.cfg))} if is_dataclass(tiny_task.cfg) else set(tiny_task.cfg)
    assert not flags & {"lm_head_positions", "keep_finished_canvases", "separate_length_candidates",
                        "finished", "length_candidates"}
    assert "prompt_cache" in flags
    with pytest.raises(ValueError, match="--prompt-cache-refresh"):
        DiffusionGenerator(dictionary, prompt_cache=True, prompt_cache_refresh=-1)
    with pytest.raises(ValueError, match="--guidance-scale"):
        DiffusionGenerator(dictionary, prompt_cache=True, guidance_scale=1.0)
