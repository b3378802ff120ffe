"""Unmasking strategies, length candidates, guidance and candidate selection."""

import math

import pytest
import torch

from helpers import batch
from test_golden_decoding import load_golden
from diffusion_plugin.strategies import ReverseStrategy, example_strategies, token_proposals
from diffusion_plugin.diffusion_generator import DiffusionGenerator
from diffusion_plugin.decoding_config import decoding_config, generator_arguments

DETERMINISTIC = example_strategies(random=False)
RANDOM = example_strategies(random=True)
MASK = 3


def generator(task, **kwargs):
    return DiffusionGenerator(task.target_dictionary, max_positions=64, **kwargs)


def body(hypo):
    return hypo["tokens"][:-1]


@pytest.mark.parametrize(
    "strategy,confidence",
    [(s, c) for s in DETERMINISTIC for c in ("prob", "margin", "entropy")
     if c == "prob" or ReverseStrategy.parse(s).ranks_by_confidence],
)
def test_batch_of_many_equals_batch_of_one(tiny_task, tiny_model, strategy, confidence):
    gen = generator(tiny_task, max_iter=5, beam_size=3, decoding_strategy=strategy, unmasking_confidence=confidence)
    indices = list(range(10))
    together = gen.generate([tiny_model], batch(tiny_task, indices))
    for i, index in enumerate(indices):
        alone = gen.generate([tiny_model], batch(tiny_task, [index]))[0]
        assert [body(h).tolist() for h in alone] == [body(h).tolist() for h in together[i]]


@pytest.mark.parametrize("strategy", DETERMINISTIC + RANDOM)
def test_every_strategy_fills_every_position_within_k_steps(tiny_task, tiny_model, strategy):
    torch.manual_seed(0)
    gen = generator(tiny_task, max_iter=4, beam_size=2, decoding_strategy=strategy, retain_history=True)
    special = {tiny_model.mask, tiny_model.pad, tiny_model.eos, tiny_task.target_dictionary.bos()}
    for sentence in gen.generate([tiny_model], batch(tiny_task, range(8))):
        for hypo in sentence:
            assert 1 <= hypo["steps"] <= 4
            assert len(hypo["history"]) == hypo["steps"] + 1
            assert not special & set(body(hypo).tolist())


def test_mask_predict_keeps_the_linear_number_of_masks_and_ranks_by_stored_scores():
    strategy = ReverseStrategy.parse("mask-predict")
    tokens = torch.tensor([[10, MASK, MASK, MASK, MASK, 2]])
    scores = torch.tensor([[-0.1, -math.inf, -math.inf, -math.inf, -math.inf, 0.0]])
    decodable = torch.tensor([[False, True, True, True, True, False]])
    proposal_tokens = torch.tensor([[10, 11, 12, 13, 14, 2]])
    proposal_scores = torch.tensor([[0.0, -0.5, -0.2, -3.0, -0.3, 0.0]])
    new_tokens, new_scores = strategy.reverse_step(
        tokens, scores, decodable, proposal_tokens, proposal_scores, 2, 4, MASK
    )
    # floor(4 * (1 - 2/4)) = 2 stay masked: the two lowest of (-0.5, -0.2, -3.0, -0.3).
    assert new_tokens.tolist() == [[10, MASK, 12, MASK, 14, 2]]
    assert new_scores[0, 2].item() == pytest.approx(-0.2)
    # A committed token keeps its stored score and is re-masked by it, whatever the model
    # now proposes at its position.
    tokens = torch.tensor([[10, 20, MASK, MASK, 21, 2]])
    scores = torch.tensor([[0.0, -5.0, -math.inf, -math.inf, -0.1, 0.0]])
    proposal_scores = torch.tensor([[0.0, -0.01, -0.2, -0.3, -0.01, 0.0]])
    new_tokens, _ = strategy.reverse_step(
        tokens, scores, decodable, proposal_tokens, proposal_scores, 3, 4, MASK
    )
    assert new_tokens.tolist() == [[10, MASK, 12, 13, 21, 2]]


def test_threshold_commits_every_confident_position_and_at_least_one():
    strategy = ReverseStrategy.parse("threshold0.5")
    tokens = torch.tensor([[MASK, MASK, MASK, MASK], [MASK, MASK, MASK, 9]])
    scores = torch.full((2, 4), -math.inf)
    scores[1, 3] = -0.1
    decodable = torch.ones(2, 4, dtype=torch.bool)
    proposal_tokens = torch.tensor([[11, 12, 13, 14], [15, 16, 17, 18]])
    proposal_scores = torch.log(torch.tensor([[0.9, 0.2, 0.6, 0.1], [0.3, 0.4, 0.1, 0.99]]))
    new_tokens, _ = strategy.reverse_step(
        tokens, scores, decodable, proposal_tokens, proposal_scores, 1, 10, MASK
    )
    assert new_tokens.tolist() == [[11, MASK, 13, MASK], [MASK, 16, MASK, 9]]
    new_tokens, _ = strategy.reverse_step(
        new_tokens, scores, decodable, proposal_tokens, proposal_scores, 10, 10, MASK
    )
    assert not new_tokens.eq(MASK).any()


def test_threshold_decoding_terminates_with_at_least_one_commit_per_step(tiny_task, tiny_model):
    gen = generator(tiny_task, max_iter=50, decoding_strategy="threshold1.0", retain_history=True)
    for sentence in gen.generate([tiny_model], batch(tiny_task, range(6))):
        hypo = sentence[0]
        masked = [int(h["tokens"].eq(tiny_model.mask).sum()) for h in hypo["history"]]
        assert all(after < before for before, after in zip(masked, masked[1:]))
        assert masked[-1] == 0 and hypo["steps"] <= len(hypo["tokens"]) - 1


def test_ancestral_unmasking_never_remasks(tiny_task, tiny_model):
    torch.manual_seed(1)
    gen = generator(tiny_task, max_iter=6, decoding_strategy="ancestral", retain_history=True)
    for sentence in gen.generate([tiny_model], batch(tiny_task, range(6))):
        history = [h["tokens"] for h in sentence[0]["history"]]
        for before, after in zip(history, history[1:]):
            committed = before.ne(tiny_model.mask)
            assert torch.equal(after[committed], before[committed])


def test_oracle_length_reproduces_the_reference_length(tiny_task, tiny_model):
    sample = batch(tiny_task, range(10))
    gen = generator(tiny_task, max_iter=3, beam_size=2, oracle_length=True)
    gold = sample["target"].ne(tiny_model.pad).sum(1)
    for sentence, length in zip(gen.generate([tiny_model], sample), gold.tolist()):
        assert [len(h["tokens"]) for h in sentence] == [length, length]
    del sample["target"]
    with pytest.raises(ValueError, match="--oracle-length"):
        gen.generate([tiny_model], sample)


def test_window_lengths_surround_the_argmax(tiny_task, tiny_model):
    sample = batch(tiny_task, range(6))
    best = tiny_model.forward_length(sample["net_input"]["src_tokens"]).argmax(-1) + 1  # class k: k + 1 tokens
    gen = generator(tiny_task, max_iter=2, beam_size=3, length_beam_mode="window")
    for sentence, argmax in zip(gen.generate([tiny_model], sample), best.tolist()):
        expected = sorted(max(1, argmax + offset) for offset in (-1, 0, 1))
        assert sorted(len(h["tokens"]) - 1 for h in sentence) == expected


def test_forced_iterations_change_steps_not_outputs(tiny_task, tiny_model):
    sample = batch(tiny_task, range(6))
    adaptive = generator(tiny_task, max_iter=8, decoding_strategy="threshold0.01").generate([tiny_model], sample)
    forced = generator(tiny_task, max_iter=8, decoding_strategy="threshold0.01", force_max_iter=True).generate(
        [tiny_model], sample
    )
    assert any(s[0]["steps"] < 8 for s in adaptive)
    for a, f in zip(adaptive, forced):
        assert f[0]["steps"] == 8
        assert torch.equal(a[0]["tokens"], f[0]["tokens"])


def test_guidance_combines_conditional_and_prompt_masked_logits(tiny_task, tiny_model):
    sample = batch(tiny_task, range(3))
    plain_generator = generator(tiny_task, max_iter=1)
    prompts = plain_generator.encode_prompts(tiny_model, sample["net_input"]["src_tokens"])
    start = plain_generator.canvases(prompts, plain_generator.candidate_lengths(prompts).view(-1))
    guided = generator(tiny_task, max_iter=1, guidance_scale=1.5).step(tiny_model, start)

    tokens = start.tokens
    decodable = plain_generator.decodable_positions(tokens, prompts.lengths)
    prompt_masked = tokens.clone()
    for row, length in enumerate(prompts.lengths.tolist()):
        prompt_masked[row, 1:length] = tiny_model.mask
    with torch.no_grad():
        c = tiny_model.output_layer(tiny_model.extract_features(tokens), decodable).float()
        u = tiny_model.output_layer(tiny_model.extract_features(prompt_masked), decodable).float()
    logits = u + 2.5 * (c - u)
    logits[:, plain_generator.never_emitted] = float("-inf")
    assert torch.equal(guided.tokens[decodable], logits.argmax(-1))
    plain = plain_generator.step(tiny_model, start)
    assert not torch.equal(plain.scores, guided.scores)


def test_confidences_lie_in_the_unit_interval_and_order_as_expected():
    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    for confidence in ("prob", "margin", "entropy"):
        tokens, scores, log_conf = token_proposals(logits, confidence=confidence)
        assert tokens.tolist() == [0, 0, 0]
        assert (log_conf <= 1e-6).all()
        assert log_conf[0] > log_conf[1] and log_conf[0] > log_conf[2]
    _, _, margin = token_proposals(logits, confidence="margin")
    assert margin[1].exp().item() == pytest.approx(0.0, abs=1e-6)
    _, _, entropy = token_proposals(logits, confidence="entropy")
    assert entropy[2].exp().item() == pytest.approx(0.0, abs=1e-5)


def test_sampling_is_seeded_and_temperature_sharpens():
    logits = torch.randn(200, 30, generator=torch.Generator().manual_seed(0))
    logits.scatter_add_(1, logits.argmax(-1, keepdim=True), torch.ones(200, 1))
    first = token_proposals(logits, sampling=True, generator=torch.Generator().manual_seed(3))[0]
    again = token_proposals(logits, sampling=True, generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(first, again)
    cold = token_proposals(logits, temperature=0.01, sampling=True, generator=torch.Generator().manual_seed(3))[0]
    assert torch.equal(cold, logits.argmax(-1))


@pytest.mark.parametrize("confidence", ["prob", "margin", "entropy"])
def test_temperature_changes_only_what_sampling_draws_from(confidence):
    """The official semantics: scores and confidences are the untempered softmax's."""
    logits = torch.randn(200, 30, generator=torch.Generator().manual_seed(0))
    untempered = logits.log_softmax(-1)
    plain = token_proposals(logits, confidence=confidence)
    for temperature in (0.3, 2.0):
        argmax = token_proposals(logits, temperature=temperature, confidence=confidence)
        assert all(torch.equal(a, b) for a, b in zip(argmax, plain))
        tokens, scores, confidences = token_proposals(
            logits, temperature, sampling=True, confidence=confidence,
            generator=torch.Generator().manual_seed(1),
        )
        assert not torch.equal(tokens, plain[0])
        assert torch.equal(scores, untempered.gather(1, tokens[:, None]).squeeze(1))
        if confidence != "prob":  # a property of the position's distribution, not of the draw
            assert torch.equal(confidences, plain[2])


def test_temperature_scales_scores_is_the_explicit_old_behaviour(tiny_task, tiny_model):
    logits = torch.randn(200, 30, generator=torch.Generator().manual_seed(0))
    _, hot, _ = token_proposals(logits, temperature=2.0, temperature_scales_scores=True)
    _, scores, _ = token_proposals(logits)
    expected = (logits / 2.0).log_softmax(-1).gather(1, logits.argmax(-1, keepdim=True)).squeeze(1)
    assert torch.allclose(hot, expected) and (hot < scores).all()
    sample = batch(tiny_task, range(12))
    default, cold = (
        generator(tiny_task, max_iter=6, beam_size=3, temperature=temperature).generate([tiny_model], sample)
        for temperature in (1.0, 0.2)
    )
    scaled = generator(tiny_task, max_iter=6, beam_size=3, temperature=0.2,
                       temperature_scales_scores=True).generate([tiny_model], sample)
    as_lists = [[(h["tokens"].tolist(), h["positional_scores"].tolist()) for h in s] for s in default]
    assert as_lists == [[(h["tokens"].tolist(), h["positional_scores"].tolist()) for h in s] for s in cold]
    assert as_lists != [[(h["tokens"].tolist(), h["positional_scores"].tolist()) for h in s] for s in scaled]
    assert decoding_config(tiny_task.cfg).temperature_scales_scores is False


def test_mbr_picks_the_consensus_candidate(tiny_task):
    dictionary = tiny_task.target_dictionary
    def hypo(words, score):
        return {"tokens": dictionary.encode_line(" ".join(words), add_if_not_exist=False),
                "score": torch.tensor(score)}
    candidates = [
        hypo(["w1", "w2", "w3", "w4"], -0.5),
        hypo(["w9", "w8", "w7", "w6"], -0.1),
        hypo(["w1", "w2", "w3", "w5"], -0.9),
    ]
    for selection in ("mbr-bleu", "mbr-chrf"):
        best = generator(tiny_task, candidate_selection=selection).select([dict(h) for h in candidates])
        assert dictionary.string(best[0]["tokens"]) == "w1 w2 w3 w4"
        assert best[-1]["mbr_utility"] < best[0]["mbr_utility"]
    by_score = generator(tiny_task).select([dict(h) for h in candidates])
    assert dictionary.string(by_score[0]["tokens"]) == "w9 w8 w7 w6"


@pytest.mark.parametrize(
    "name", ["threshold0", "threshold1.5", "mask-predict-quadratic", "ancestral-cosine"]
)
def test_bad_strategy_names_are_rejected(name):
    with pytest.raises(ValueError, match="--decoding-strategy"):
        ReverseStrategy.parse(name)


def test_bad_decoding_options_name_their_flag(tiny_task):
    dictionary = tiny_task.target_dictionary
    cases = [
        (dict(temperature=0.0), "--temperature"),
        (dict(guidance_scale=-1.0), "--guidance-scale"),
        (dict(unmasking_confidence="margin", decoding_strategy="mask-predict"), "--unmasking-confidence"),
        (dict(length_beam_mode="around"), "--length-beam-mode"),
        (dict(candidate_selection="mbr-rouge"), "--candidate-selection"),
    ]
    for kwargs, flag in cases:
        with pytest.raises(ValueError, match=flag):
            DiffusionGenerator(dictionary, **kwargs)


def test_fairseq_generation_flags_reach_the_generator(tiny_task, tiny_model):
    from argparse import Namespace

    args = Namespace(iter_decode_max_iter=7, iter_decode_with_beam=4, temperature=0.5,
                     sampling=True, iter_decode_force_max_iter=True)
    options = generator_arguments(args)
    assert options["max_iter"] == 7 and options["beam_size"] == 4
    assert options["temperature"] == 0.5 and options["sampling"] and options["force_max_iter"]
    assert decoding_config(tiny_task.cfg, args).decoding_strategy == tiny_task.cfg.decoding_strategy
    generator = tiny_task.build_generator([tiny_model], args)
    assert (generator.max_iter, generator.beam_size, generator.force_max_iter) == (7, 4, True)
    assert generator.temperature == 0.5 and generator.sampling


def test_samples_per_length_multiply_the_candidates_and_mbr_ranks_them(tiny_task, tiny_model):
    torch.manual_seed(0)
    gen = generator(tiny_task, max_iter=3, beam_size=2, samples_per_length=3, sampling=True,
                    candidate_selection="mbr-chrf")
    length_logits = tiny_model.forward_length(batch(tiny_task, range(5))["net_input"]["src_tokens"])
    top2 = length_logits.topk(2, dim=-1).indices + 1  # class k: k + 1 tokens
    for sentence, lengths in zip(gen.generate([tiny_model], batch(tiny_task, range(5))), top2.tolist()):
        assert len(sentence) == 6
        assert sorted(len(h["tokens"]) - 1 for h in sentence) == sorted(lengths * 3)
        utilities = [h["mbr_utility"] for h in sentence]
        assert utilities == sorted(utilities, reverse=True)


def test_canvases_of_other_lengths_than_the_batch_get_their_own_target_positions(tiny_task, tiny_model):
    """The released code reuses the batch's prompt masks for length-beam canvases of other
    lengths (docs/DIFFERENCES.md, row 13); here every canvas derives its own target positions."""
    sample = batch(tiny_task, range(4))
    src_tokens = sample["net_input"]["src_tokens"]
    gen = generator(tiny_task)
    rows = torch.arange(4).repeat_interleave(3)
    prompts = gen.encode_prompts(tiny_model, src_tokens).select(rows)
    target_lengths = torch.tensor([1, 7, 3, 12, 2, 5, 9, 1, 4, 6, 11, 2])
    canvas = gen.canvases(prompts, target_lengths)
    decodable = gen.decodable_positions(canvas.tokens, prompts.lengths)
    assert decodable.sum(1).tolist() == target_lengths.tolist()
    for row, (prompt_length, length) in enumerate(zip(prompts.lengths.tolist(), target_lengths.tolist())):
        assert decodable[row].nonzero().view(-1).tolist() == list(range(prompt_length, prompt_length + length))
        assert canvas.tokens[row, prompt_length + length] == tiny_model.eos


def test_more_length_candidates_than_length_classes_is_an_error(tiny_task, tiny_model):
    gen = generator(tiny_task, beam_size=tiny_model.cfg.length_classes + 1)
    with pytest.raises(ValueError, match="--iter-decode-with-beam 17 .* 16 length classes"):
        gen.generate([tiny_model], batch(tiny_task, range(2)))


@pytest.mark.parametrize("strategy", ["dilated", "dilated-linear", "wino0.5-0.9", "wino0.1-0.5"])
def test_repetition_samplers_give_the_same_output_in_a_batch_of_8_as_alone(strategy):
    model, task, sample, _ = load_golden()
    gen = generator(task, max_iter=10, beam_size=2, decoding_strategy=strategy)
    together = gen.generate([model], rows_of(sample, range(8)))
    for row in range(8):
        alone = gen.generate([model], rows_of(sample, [row]))
        assert [body(h).tolist() for h in alone[0]] == [body(h).tolist() for h in together[row]]


def rows_of(sample, rows):
    """The prompts of ``rows`` of a collated ``sample``, as wide as the longest of them."""
    rows = torch.tensor(list(rows))
    lengths = sample["net_input"]["src_lengths"][rows]
    return {"net_input": {"src_tokens": sample["net_input"]["src_tokens"][rows, : int(lengths.max())],
                          "src_lengths": lengths}}


def newly_committed(history, mask):
    """Per step of a retained history, bool (L,): positions that were <mask> and are not after it."""
    return [before.eq(mask) & after.ne(mask) for before, after in zip(history, history[1:])]


@pytest.mark.parametrize("steps", [2, 3, 5, 10, 30])
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_dilated_unmasking_never_commits_two_neighbours_in_one_step(tiny_task, tiny_model, steps, schedule):
    gen = generator(tiny_task, max_iter=steps, beam_size=3, decoding_strategy=f"dilated-{schedule}",
                    retain_history=True)
    targets = 0
    for sentence in gen.generate([tiny_model], batch(tiny_task, range(12))):
        for hypo in sentence:
            history = [h["tokens"][:-1] for h in hypo["history"]]
            assert not history[-1].eq(tiny_model.mask).any() and hypo["steps"] <= steps
            for committed in newly_committed(history, tiny_model.mask):
                assert not (committed[1:] & committed[:-1]).any()
            targets += len(history[-1]) > 2
    assert targets > 10


def test_dilated_order_commits_even_offsets_first_with_halving_strides():
    strategy = ReverseStrategy.parse("dilated-linear")
    width = 9  # <s> and 8 target positions
    tokens = torch.full((1, width), MASK)
    tokens[0, 0] = 0
    decodable = torch.arange(width).unsqueeze(0) >= 1
    scores = torch.zeros(1, width).masked_fill(decodable, -math.inf)
    proposal = torch.arange(10, 10 + width).unsqueeze(0)
    committed_per_step = []
    for step in range(1, 5):
        new_tokens, scores = strategy.reverse_step(tokens, scores, decodable, proposal, -torch.rand(1, width),
                                                   step, 4, MASK)
        committed_per_step.append((tokens.eq(MASK) & new_tokens.ne(MASK))[0, 1:].nonzero().view(-1).tolist())
        tokens = new_tokens
    # linear over 4 steps: 2 per step, offsets 0, 4 then 2, 6 then the odd ones 1, 5 then 3, 7
    assert committed_per_step == [[0, 4], [2, 6], [1, 5], [3, 7]]


def test_wino_drafts_above_the_draft_threshold_and_remasks_below_the_verify_threshold():
    strategy = ReverseStrategy.parse("wino0.5-0.9")
    log = lambda values: torch.log(torch.tensor([values]))  # noqa: E731
    tokens = torch.tensor([[20, 21, 22, MASK, MASK, MASK]])
    scores = log([0.9, 0.9, 0.9, 0.0, 0.0, 0.0])
    decodable = torch.ones(1, 6, dtype=torch.bool)
    proposal = torch.tensor([[30, 21, 32, 33, 34, 35]])
    proposal_scores = log([0.6, 0.95, 0.5, 0.7, 0.6, 0.2])
    canvas_scores = log([0.3, 0.95, 0.5, 0.0, 0.0, 0.0])  # this step's probability of 20, 21, 22
    new_tokens, new_scores = strategy.reverse_step(tokens, scores, decodable, proposal, proposal_scores, 2, 10,
                                                   MASK, canvas_scores=canvas_scores)
    # drafts 33 and 34 (>= 0.5), not 35 (0.2); 20 and 22 fall below 0.9 and two drafts allow one re-mask:
    # the least probable, 20
    assert new_tokens.tolist() == [[MASK, 21, 22, 33, 34, MASK]]
    assert new_scores[0, 0] == -math.inf and new_scores[0, 3] == pytest.approx(math.log(0.7))
    # nothing reaches the draft threshold: the most probable masked position is drafted, none re-masked
    new_tokens, _ = strategy.reverse_step(tokens, scores, decodable, proposal, log([0.1] * 5 + [0.2]), 2, 10,
                                          MASK, canvas_scores=canvas_scores)
    assert new_tokens.tolist() == [[20, 21, 22, MASK, MASK, 35]]
    # the last step commits everything and re-masks nothing
    new_tokens, _ = strategy.reverse_step(tokens, scores, decodable, proposal, proposal_scores, 10, 10,
                                          MASK, canvas_scores=canvas_scores)
    assert new_tokens.tolist() == [[20, 21, 22, 33, 34, 35]]
    # a canvas without <mask> is final
    full = torch.tensor([[20, 21, 22, 23, 24, 25]])
    assert strategy.reverse_step(full, scores, decodable, proposal, proposal_scores, 2, 10, MASK,
                                 canvas_scores=log([0.01] * 6))[0].tolist() == full.tolist()


@pytest.mark.parametrize("strategy", ["wino0.5-0.9", "wino0.1-0.5", "wino0.1-0.9"])
def test_wino_decoding_remasks_and_terminates_with_one_mask_fewer_per_step(strategy):
    model, task, sample, _ = load_golden()
    gen = generator(task, max_iter=50, beam_size=2, decoding_strategy=strategy, retain_history=True)
    remasked = 0
    for sentence in gen.generate([model], sample):
        for hypo in sentence:
            history = [h["tokens"][:-1] for h in hypo["history"]]
            masked = [int(h.eq(model.mask).sum()) for h in history]
            assert all(after < before for before, after in zip(masked, masked[1:]))
            assert masked[-1] == 0 and hypo["steps"] <= len(history[0])
            remasked += sum(int((b.ne(model.mask) & a.eq(model.mask)).sum()) for b, a in zip(history, history[1:]))
    if strategy.startswith("wino0.1-"):  # it drafts more than one token a step, so it may re-mask
        assert remasked > 0, "the trained model's drafts should fail verification somewhere"
