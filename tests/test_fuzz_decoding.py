"""Fuzzed decoding (hypothesis) on a tiny untrained model: random prompts, target
lengths, strategies, steps K, length beams and batch compositions.

Invariants: every reverse step keeps the prompt and the final ``</s>``; decoding
takes at most K steps and fills every position; no output holds ``<mask>``,
``<pad>``, ``<s>`` or ``</s>`` before its final ``</s>``; every output has its chosen
length (the length head's or the reference's, clipped to the room after the
prompt); with a deterministic strategy a sentence's outputs do not depend on the
rest of its batch.

Generated cases: 700 (all strategies) + 300 (deterministic strategies, batch
independence) = 1,000 (``CASES``); each test checks that it ran its share.

Early stopping: on at least 1,000 fuzzed canvases (``EARLY_STOP_CANVASES``), mostly
``reparam-cond-*``, the outputs of a decoding that stops canvases early equal those of
running all K steps (``--iter-decode-force-max-iter``, as the official code does), and
stopping at the first canvas without ``<mask>`` would have changed some of them.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffusion_plugin.strategies import CONFIDENCES, STRATEGIES, ReverseStrategy, example_strategies
from diffusion_plugin.decoding_config import CANDIDATE_SELECTIONS, LENGTH_BEAM_MODES
from diffusion_plugin.diffusion_generator import DiffusionGenerator
from benchmarks.variants import MeasuredGenerator

CASES = {"invariants": 700, "batch_independence": 300, "early_stopping": 250}
EARLY_STOP_CANVASES = 1000
MAX_POSITIONS = 64  # the tiny model's: <s>, 61 prompt tokens, one target token, </s>


def fuzz(cases):
    return settings(
        max_examples=cases,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def model(tiny_task, tiny_cfg):
    torch.manual_seed(0)
    return tiny_task.build_model(tiny_cfg.model).eval()


@pytest.fixture(scope="module")
def vocabulary(tiny_task):
    """Every symbol of the dictionary but the special ones and <mask>."""
    dictionary = tiny_task.source_dictionary
    return [i for i in range(dictionary.nspecial, len(dictionary)) if i != dictionary.index("<mask>")]


@st.composite
def strategy_names(draw, deterministic):
    """A registered kind, then one of its example names (deterministic ones if asked)."""
    names = example_strategies(random=False if deterministic else None)
    kind = draw(st.sampled_from(sorted({ReverseStrategy.parse(name).kind for name in names})))
    return draw(st.sampled_from([name for name in names if ReverseStrategy.parse(name).kind == kind]))


def ranks_by_confidence(name):
    return ReverseStrategy.parse(name).ranks_by_confidence


@st.composite
def decoding_options(draw, deterministic):
    """DiffusionGenerator keywords; ``deterministic`` leaves out every random choice."""
    strategy = draw(strategy_names(deterministic))
    return dict(
        decoding_strategy=strategy,
        max_iter=draw(st.integers(1, 8)),
        beam_size=draw(st.integers(1, 4)),
        length_beam_mode=draw(st.sampled_from(LENGTH_BEAM_MODES)),
        oracle_length=draw(st.booleans()),
        unmasking_confidence=draw(st.sampled_from(CONFIDENCES)) if ranks_by_confidence(strategy) else "prob",
        temperature=draw(st.floats(0.3, 2.0)),
        sampling=not deterministic and draw(st.booleans()),
        guidance_scale=draw(st.sampled_from([0.0, 0.0, 1.0])),
        force_max_iter=draw(st.booleans()),
        candidate_selection=draw(st.sampled_from(CANDIDATE_SELECTIONS)),
    )


def examples(vocabulary):
    """Batches of 1 to 5 (prompt token ids, reference length) pairs."""
    prompt = st.integers(1, MAX_POSITIONS - 3).flatmap(
        lambda n: st.lists(st.sampled_from(vocabulary), min_size=n, max_size=n)
    )
    return st.lists(st.tuples(prompt, st.integers(1, 20)), min_size=1, max_size=5)


def collate(task, pairs):
    """The batch the task's dataset makes of ``pairs``."""
    dictionary = task.source_dictionary
    samples = [
        {"id": i, "source": torch.LongTensor(prompt + [dictionary.eos()]),
         "target": torch.LongTensor([dictionary.index("w1")] * length + [dictionary.eos()])}
        for i, (prompt, length) in enumerate(pairs)
    ]
    return task.dataset("test").collater(samples)


class StepChecker(DiffusionGenerator):
    """The generator, counting reverse steps and checking that the canvases start with
    their prompts and that each step keeps every canvas's prompt and final ``</s>``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = 0

    def canvases(self, prompts, lengths):
        canvases = super().canvases(prompts, lengths)
        width = prompts.tokens.size(1)
        in_prompt = torch.arange(width) < prompts.lengths.unsqueeze(1)
        assert torch.equal(canvases.tokens[:, :width][in_prompt], prompts.tokens[in_prompt])
        return canvases

    def step(self, model, canvases):
        after = super().step(model, canvases)
        self.steps += 1
        tokens = after.tokens
        in_prompt = torch.arange(tokens.size(1)) < canvases.prompt_lengths.unsqueeze(1)
        assert torch.equal(tokens[in_prompt], canvases.tokens[in_prompt])
        ends = tokens.ne(self.pad).sum(1, keepdim=True) - 1
        assert tokens.gather(1, ends).eq(self.eos).all()
        return after


def test_decoding_invariants(tiny_task, model, vocabulary):
    dictionary = tiny_task.target_dictionary
    special = {model.mask, dictionary.pad(), dictionary.bos(), dictionary.eos()}
    cases = []

    @fuzz(CASES["invariants"])
    @given(options=decoding_options(deterministic=False), pairs=examples(vocabulary), seed=st.integers(0, 2**16))
    def check(options, pairs, seed):
        cases.append(options)
        torch.manual_seed(seed)
        sample = collate(tiny_task, pairs)
        generator = StepChecker(dictionary, max_positions=MAX_POSITIONS, **options)
        hypos = generator.generate([model], sample)
        steps = options["max_iter"]
        assert generator.steps <= steps

        prompts = generator.encode_prompts(model, sample["net_input"]["src_tokens"])
        chosen = generator.candidate_lengths(prompts, sample)
        room = (MAX_POSITIONS - prompts.lengths - 1).unsqueeze(1)
        assert (chosen >= 1).all() and (chosen <= room).all()
        if options["oracle_length"]:
            gold = torch.LongTensor([length for _, length in pairs]).unsqueeze(1)
            assert torch.equal(chosen, torch.minimum(gold, room).expand_as(chosen))
        for row, sentence in enumerate(hypos):
            assert sorted(len(h["tokens"]) - 1 for h in sentence) == sorted(chosen[row].tolist())
            for hypo in sentence:
                assert hypo["tokens"][-1] == dictionary.eos()
                assert not special & set(hypo["tokens"][:-1].tolist())
                assert 1 <= hypo["steps"] <= steps
                assert hypo["steps"] == steps or not options["force_max_iter"]

    check()
    assert len(cases) >= CASES["invariants"]
    kinds = {ReverseStrategy.parse(o["decoding_strategy"]).kind for o in cases}
    assert kinds == set(STRATEGIES) and any(o["sampling"] for o in cases)


def test_deterministic_outputs_do_not_depend_on_the_batch(tiny_task, model, vocabulary):
    cases = []

    @fuzz(CASES["batch_independence"])
    @given(options=decoding_options(deterministic=True), pairs=examples(vocabulary))
    def check(options, pairs):
        cases.append(options)
        generator = DiffusionGenerator(tiny_task.target_dictionary, max_positions=MAX_POSITIONS, **options)
        together = generator.generate([model], collate(tiny_task, pairs))
        for row, pair in enumerate(pairs):
            alone = generator.generate([model], collate(tiny_task, [pair]))[0]
            assert [h["tokens"].tolist() for h in alone] == [h["tokens"].tolist() for h in together[row]]

    check()
    assert len(cases) >= CASES["batch_independence"]


@st.composite
def early_stopping_options(draw):
    """Mostly reparam-cond-*; random draws only with finished canvases kept (same batch, same draws)."""
    if draw(st.integers(0, 3)) > 0:
        selection = draw(st.sampled_from(["deterministic", "stochastic0.5", "stochastic2.0"]))
        strategy = f"reparam-cond-{selection}-{draw(st.sampled_from(['cosine', 'linear']))}"
    else:
        strategy = draw(strategy_names(deterministic=False))
    sampling = draw(st.booleans())
    random = sampling or ReverseStrategy.parse(strategy).random
    return dict(
        decoding_strategy=strategy,
        max_iter=draw(st.integers(2, 12)),
        beam_size=draw(st.integers(1, 4)),
        oracle_length=draw(st.booleans()),
        unmasking_confidence=draw(st.sampled_from(CONFIDENCES)) if ranks_by_confidence(strategy) else "prob",
        temperature=draw(st.floats(0.3, 2.0)),
        sampling=sampling,
        guidance_scale=draw(st.sampled_from([0.0, 0.0, 1.0])),
        finished="keep" if random else draw(st.sampled_from(["keep", "half", "drop"])),
    )


def first_unmasked(history, mask):
    """The first canvas of a hypothesis's history (after step 1) without <mask>, or None."""
    for entry in history[1:]:
        if not entry["tokens"].eq(mask).any():
            return entry["tokens"]
    return None


def test_early_stopping_equals_running_all_steps(tiny_task, model, vocabulary):
    dictionary = tiny_task.target_dictionary
    counts = {"canvases": 0, "cond_canvases": 0, "would_differ": 0}

    @fuzz(CASES["early_stopping"])
    @given(options=early_stopping_options(), pairs=examples(vocabulary), seed=st.integers(0, 2**16))
    def check(options, pairs, seed):
        sample = collate(tiny_task, pairs)
        runs = []
        for force in (False, True):
            generator = MeasuredGenerator(
                dictionary, max_positions=MAX_POSITIONS, force_max_iter=force, retain_history=force,
                **options,
            )
            torch.manual_seed(seed)
            runs.append(generator.generate([model], sample))
        early, full = runs
        for early_hypos, full_hypos in zip(early, full):
            assert [(h["tokens"].tolist(), h["positional_scores"].tolist()) for h in early_hypos] == [
                (h["tokens"].tolist(), h["positional_scores"].tolist()) for h in full_hypos
            ]
            counts["canvases"] += len(full_hypos)
            if options["decoding_strategy"].startswith("reparam-cond"):
                counts["cond_canvases"] += len(full_hypos)
                for hypo in full_hypos:
                    stopped = first_unmasked(hypo["history"], model.mask)
                    counts["would_differ"] += not torch.equal(stopped, hypo["tokens"])

    check()
    assert counts["canvases"] >= EARLY_STOP_CANVASES and counts["cond_canvases"] >= EARLY_STOP_CANVASES // 2
    print(counts)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("selection", ["deterministic", "stochastic1.0"])
def test_cond_remasking_canvases_stop_only_when_no_step_can_change_them(schedule, selection):
    """2,000 seeded random canvases per strategy, random proposals from 3 tokens every
    step: each canvas taken where the generator stops it equals the canvas after all K
    steps; taken at its first step without <mask> it differs for some."""
    strategy = ReverseStrategy.parse(f"reparam-cond-{selection}-{schedule}")
    random = torch.Generator().manual_seed(0)
    differ_at_first_unmasked = 0
    for max_step in (2, 5, 10, 20, 50):
        rows, width = 400, 24
        num_tokens = torch.randint(1, width + 1, (rows,), generator=random)
        decodable = torch.arange(width) < num_tokens.unsqueeze(1)
        tokens = torch.full((rows, width), 3).masked_fill(~decodable, 0)
        scores = torch.zeros(rows, width).masked_fill(decodable, float("-inf"))
        stopped = [None] * rows
        first_unmasked = [None] * rows
        for step in range(1, max_step + 1):
            proposal_tokens = torch.randint(0, 3, (rows, width), generator=random)
            proposal_scores = -3 * torch.rand(rows, width, generator=random)
            tokens, scores = strategy.reverse_step(
                tokens, scores, decodable, proposal_tokens, proposal_scores, step, max_step, 3,
                generator=random,
            )
            unmasked = ~tokens.eq(3).any(1)
            done = unmasked & ~strategy.may_change_unmasked(num_tokens, step, max_step)
            for row in range(rows):
                if unmasked[row] and first_unmasked[row] is None:
                    first_unmasked[row] = tokens[row].clone()
                if done[row] and stopped[row] is None:
                    stopped[row] = (tokens[row].clone(), scores[row].clone())
        for row in range(rows):
            assert torch.equal(stopped[row][0], tokens[row]) and torch.equal(stopped[row][1], scores[row])
            differ_at_first_unmasked += not torch.equal(first_unmasked[row], tokens[row])
    assert differ_at_first_unmasked > 0
    print(f"{selection}-{schedule}: {differ_at_first_unmasked} of 2000 canvases would change")
