"""The sampler: RDM's reverse process over ``<s> prompt <mask>* </s>``, top to bottom.

``DiffusionGenerator.generate`` encodes the prompts once (the length logits and, with
``--prompt-attention prefix``, the exact prompt cache), picks candidate lengths, builds
one canvas per candidate, denoises all canvases of a batch together
(:meth:`DiffusionGenerator.denoise`, one :meth:`DiffusionGenerator.step` at a time) and
orders each sentence's candidates (:meth:`DiffusionGenerator.select`). The model is
only a network (features and logits at given positions); what a reverse step commits
and re-masks is the ``--decoding-strategy``'s (``strategies.py``).
"""

import dataclasses
import logging
from dataclasses import dataclass
from typing import List, Optional

import sacrebleu
import torch
from fairseq import utils
from torch import Tensor

from diffusion_plugin.strategies import token_log_probs, token_proposals
from diffusion_plugin.constants import MASK_SYMBOL
from diffusion_plugin.decoding_config import DecodingConfig
from diffusion_plugin.modules.length_classes import (
    class_lengths,
    classes_of_lengths,
    most_likely_lengths,
    target_lengths,
)
from diffusion_plugin.modules.prompt_cache import PromptCache
from diffusion_plugin.option_ranges import check_ranges

logger = logging.getLogger(__name__)

ROWS_PER_FORWARD = 64
"""Most canvases denoised in one forward before the length candidates go one slot at a
time: with 3 lengths, one slot at a time was 0.74x as fast at batch size 1 and 1.08x
at batch size 64 (docs/SPEED.md, Throughput)."""


@dataclass
class Prompts:
    """The prompt-only pass over a batch: ``tokens`` (B, S) ``<s> prompt`` right-padded,
    ``lengths`` (B,), ``length_logits`` (B, C) and, with ``--prompt-attention prefix``,
    the exact prompt ``cache``."""

    tokens: Tensor
    lengths: Tensor
    length_logits: Tensor
    cache: Optional[PromptCache] = None

    def select(self, rows: Tensor) -> "Prompts":
        """The prompts of rows ``rows`` (LongTensor), e.g. one per canvas."""
        cache = self.cache.select(rows) if self.cache is not None else None
        return Prompts(self.tokens.index_select(0, rows), self.lengths.index_select(0, rows),
                       self.length_logits.index_select(0, rows), cache)


@dataclass
class Canvases:
    """The canvases being denoised: ``tokens`` (N, L) ``<s> prompt target </s>``
    right-padded, ``scores`` (N, L) (each committed token's log-prob, -inf while
    masked), ``prompt_lengths`` (N,), ``prompt_width`` S (the prompts' padded width),
    the reverse steps done, the prompt ``cache`` (or None) and, with
    ``--retain-iter-history``, the tokens after each step (``history``)."""

    tokens: Tensor
    scores: Tensor
    prompt_lengths: Tensor
    prompt_width: int
    step: int = 0
    cache: Optional[PromptCache] = None
    history: Optional[List[Tensor]] = None

    def select(self, rows: Tensor) -> "Canvases":
        """The canvases ``rows`` (LongTensor)."""
        return dataclasses.replace(
            self,
            tokens=self.tokens[rows],
            scores=self.scores[rows],
            prompt_lengths=self.prompt_lengths.index_select(0, rows),
            cache=self.cache.select(rows) if self.cache is not None else None,
            history=[h[rows] for h in self.history] if self.history is not None else None,
        )


class DiffusionGenerator:
    """Decodes with a :class:`DiffusionXLMRModel` (fairseq's generator interface:
    ``generate(models, sample)``, built by the task's ``build_generator``).

    For every prompt, ``beam_size`` target lengths (the length head's top-k, a window
    around its argmax, or the reference length) each get ``samples_per_length``
    canvases (which differ only under sampling or a stochastic strategy); all canvases of
    a batch are denoised together for at most ``max_iter`` steps. A canvas is finished
    (its output kept) as soon as nothing in it is masked and no later step can change it
    (the strategy's ``may_change_unmasked``: ``reparam-cond-*`` goes on while its
    schedule still re-masks), so stopping early changes no output (``force_max_iter``
    runs every step anyway, as the official code does); it stays in the batch until every
    canvas is finished (:meth:`leave_batch`). Candidates are ordered by mean token
    log-prob or by minimum Bayes risk.

    ``decoding`` holds the plugin's options (:class:`DecodingConfig`; ``options``
    override its fields by name), read from it and nowhere else; its parsed
    ``--decoding-strategy`` is ``strategy``; the other arguments are fairseq's
    generation options (``FAIRSEQ_GENERATION_OPTIONS``).
    :meth:`candidate_groups`, :meth:`leave_batch`, :meth:`head_positions` and
    :meth:`step_logits` are the hooks the speed benchmark's slower variants override
    (benchmarks/variants.py).
    """

    def __init__(
        self,
        tgt_dict,
        decoding: Optional[DecodingConfig] = None,
        max_iter: int = 10,
        beam_size: int = 1,
        retain_history: bool = False,
        max_positions: int = 512,
        temperature: float = 1.0,
        sampling: bool = False,
        force_max_iter: bool = False,
        post_process: Optional[str] = None,
        **options,
    ):
        check_ranges({"iter_decode_max_iter": max_iter, "iter_decode_with_beam": beam_size, "temperature": temperature})
        self.decoding = dataclasses.replace(decoding or DecodingConfig(), **options)
        self.strategy = self.decoding.validate()
        if str(self.decoding.length_beam_mode) == "window" and beam_size > max_positions - 2:
            raise ValueError(
                f"--iter-decode-with-beam {beam_size} with --length-beam-mode window asks for "
                f"more target lengths than fit in --max-positions {max_positions}; give a "
                f"value in [1, {max_positions - 2}]"
            )
        self.tgt_dict = tgt_dict
        self.pad = tgt_dict.pad()
        self.eos = tgt_dict.eos()
        self.mask = tgt_dict.index(MASK_SYMBOL)
        self.never_emitted = [self.mask, self.pad, tgt_dict.bos(), self.eos]
        self.max_iter = max_iter
        self.beam_size = beam_size
        self.num_candidates = beam_size * self.decoding.samples_per_length
        self.retain_history = retain_history
        self.max_positions = max_positions
        self.temperature = temperature
        self.sampling = sampling
        self.force_max_iter = force_max_iter
        self.post_process = post_process

    def describe(self) -> str:
        """The decoding this generator does, in the options' words (fairseq-generate's
        score line names fairseq's own --beam, which diffusion decoding does not use)."""
        length = (
            "oracle length" if self.decoding.oracle_length
            else f"length beam {self.beam_size} ({self.decoding.length_beam_mode})"
        )
        steps = "exactly" if self.force_max_iter else "at most"
        return (
            f"diffusion decoding: {steps} {self.max_iter} steps (--iter-decode-max-iter), {length}, "
            f"{self.decoding.samples_per_length} sample(s) per length, --decoding-strategy "
            f"{self.decoding.decoding_strategy}{', sampling' if self.sampling else ''}; "
            "the score line's beam= is fairseq's unused --beam"
        )

    # ------------------------------------------------------------- the sampler
    @torch.no_grad()
    def generate(self, models, sample, prefix_tokens=None, constraints=None, **kwargs):
        """Returns, per sentence, hypotheses best-first as fairseq dicts."""
        if len(models) != 1:
            raise NotImplementedError("diffusion decoding of a model ensemble is not supported")
        if prefix_tokens is not None or constraints is not None:
            raise NotImplementedError("--prefix-size and constraints are not supported")
        model = models[0]
        prompts = self.encode_prompts(model, sample["net_input"]["src_tokens"])
        batch_size = prompts.tokens.size(0)

        lengths = self.candidate_lengths(prompts, sample).view(-1)
        rows = utils.new_arange(prompts.tokens, batch_size).repeat_interleave(self.num_candidates)
        candidates = utils.new_arange(prompts.tokens, rows.numel())
        finals = [None] * rows.numel()
        for group in self.candidate_groups(candidates, batch_size):
            canvases = self.canvases(prompts.select(rows[group]), lengths[group])
            for index, final in zip(group.tolist(), self.denoise(model, canvases)):
                finals[index] = final

        prompt_lengths = prompts.lengths.repeat_interleave(self.num_candidates)
        length_scores = self.length_log_probs(prompts.length_logits, lengths)
        finalized = []
        for sent in range(batch_size):
            hypos = []
            for index in range(sent * self.num_candidates, (sent + 1) * self.num_candidates):
                hypo = self.hypothesis(finals[index], int(prompt_lengths[index]), int(lengths[index]))
                hypos.append({**hypo, "length_score": length_scores[index]})
            hypos = self.select(hypos)
            if self.decoding.collapse_repeats:
                hypos = [self.collapse_repeats(hypo) for hypo in hypos]
            finalized.append(hypos)
        return finalized

    def encode_prompts(self, model, src_tokens):
        """The prompt-only pass over src_tokens (B, S): :class:`Prompts`."""
        prompt_lengths = src_tokens.ne(self.pad).sum(1)
        features, layer_inputs = model.encode(src_tokens)
        cache = None
        if model.cfg.prompt_attention == "prefix":
            cache = PromptCache.from_layer_inputs(layer_inputs, prompt_lengths, src_tokens.size(1))
        return Prompts(src_tokens, prompt_lengths, model.forward_length(src_tokens, features), cache)

    def candidate_lengths(self, prompts, sample=None):
        """Target lengths of the canvases of each prompt: LongTensor (B, beam * samples).

        ``beam_size`` lengths, the length head's top-k (``topk``), CMLM's window around
        its argmax (``window``) or, with ``--oracle-length``, the reference length, each
        repeated ``--samples-per-length`` times and clipped to the room left after its
        prompt within ``max_positions``.
        """
        if self.decoding.oracle_length:
            if sample is None or sample.get("target") is None:
                raise ValueError("--oracle-length needs references (a test set with targets)")
            gold = target_lengths(sample["target"], self.pad)  # 0 for an empty target
            lengths = gold.unsqueeze(1).repeat(1, self.beam_size)
        elif str(self.decoding.length_beam_mode) == "window":
            best = most_likely_lengths(prompts.length_logits, 1)
            offsets = utils.new_arange(best, 1, self.beam_size) - self.beam_size // 2
            lengths = (best + offsets).clamp(min=class_lengths(0))
        else:
            num_classes = prompts.length_logits.size(-1)
            if self.beam_size > num_classes:
                raise ValueError(
                    f"--iter-decode-with-beam {self.beam_size} asks for more lengths than the "
                    f"model's {num_classes} length classes; use at most {num_classes}"
                )
            lengths = most_likely_lengths(prompts.length_logits, self.beam_size)
        lengths = lengths.repeat_interleave(self.decoding.samples_per_length, dim=1)
        room = self.max_positions - prompts.lengths - 1
        if (room < 0).any():
            row = int((room < 0).nonzero()[0, 0])
            raise ValueError(
                f"prompt {row} of the batch has {int(prompts.lengths[row])} tokens "
                f"and leaves no room for </s> within --max-positions {self.max_positions}"
            )
        room = room.unsqueeze(1)
        clipped = lengths > room
        if clipped.any():
            logger.warning(
                f"{int(clipped.any(1).sum())} prompt(s) leave too little room within "
                f"--max-positions {self.max_positions}; their candidate lengths were clipped"
            )
        return torch.minimum(lengths, room)

    def candidate_groups(self, candidates, batch_size):
        """The batches the candidates (batch_size * num_candidates,) are denoised in: all
        in one while they are at most ``ROWS_PER_FORWARD`` canvases, else one batch per
        candidate slot (every sentence's k-th length). Returns LongTensor (groups, group size)."""
        if self.num_candidates == 1 or candidates.numel() <= ROWS_PER_FORWARD:
            return candidates.unsqueeze(0)
        return candidates.view(batch_size, self.num_candidates).t()

    def canvases(self, prompts, lengths):
        """One canvas ``<s> prompt <mask>*L </s>`` right-padded per prompt of ``prompts``
        (one per canvas) and target length L of lengths (N,): :class:`Canvases`."""
        src_tokens = prompts.tokens
        total = prompts.lengths + lengths + 1
        positions = utils.new_arange(src_tokens, src_tokens.size(0), int(total.max()))
        prompt_len, canvas_len = prompts.lengths.unsqueeze(1), total.unsqueeze(1)
        tokens = src_tokens.new_full(positions.shape, self.pad)
        tokens[positions < canvas_len - 1] = self.mask
        tokens[positions == canvas_len - 1] = self.eos
        prompt_width = src_tokens.size(1)
        in_prompt = positions[:, :prompt_width] < prompt_len
        tokens[:, :prompt_width] = torch.where(in_prompt, src_tokens, tokens[:, :prompt_width])
        scores = torch.zeros(tokens.shape, device=tokens.device)
        scores = scores.masked_fill(tokens.eq(self.mask), float("-inf"))
        history = [tokens.clone()] if self.retain_history else None
        return Canvases(tokens, scores, prompts.lengths, prompt_width, cache=prompts.cache, history=history)

    def denoise(self, model, canvases):
        """Run the reverse process on every canvas of ``canvases``.

        Returns, per canvas, (tokens (L,), scores (L,), steps, history or None) as it
        was when it finished: when nothing in it was masked and no later step could
        change it, or at step ``max_iter``.
        """
        finals = [None] * canvases.tokens.size(0)
        active = utils.new_arange(canvases.tokens, len(finals))
        for _ in range(self.max_iter):
            canvases = self.step(model, canvases)
            tokens = canvases.tokens
            if canvases.step == self.max_iter:
                done = tokens.new_ones(tokens.size(0)).bool()
            elif self.force_max_iter:
                done = tokens.new_zeros(tokens.size(0)).bool()
            else:
                num_tokens = tokens.ne(self.pad).sum(1) - canvases.prompt_lengths - 1
                done = ~tokens.eq(self.mask).any(1) & ~self.strategy.may_change_unmasked(
                    num_tokens, canvases.step, self.max_iter
                )
            for local in done.nonzero().view(-1).tolist():
                index = int(active[local])
                if finals[index] is None:
                    history = [h[local] for h in canvases.history] if self.retain_history else None
                    finals[index] = (tokens[local], canvases.scores[local], canvases.step, history)
            if done.all():
                break
            keep = self.leave_batch(done)
            if keep is not None:
                active = active[keep]
                canvases = canvases.select(keep)
        return finals

    def leave_batch(self, done):
        """Row indices (LongTensor) of the canvases that stay in the batch after a step
        where ``done`` (bool (N,)) are finished, or None: all of them stay (a finished
        canvas's further steps change nothing, and gathering a smaller batch cost more than
        those steps at batch sizes 1 and 64: docs/SPEED.md, Throughput)."""
        return None

    # ---------------------------------------------------------------- one step
    def step(self, model, canvases):
        """One reverse-diffusion step of every canvas: a proposal at the LM-head
        positions (``<mask>``, ``<pad>``, ``<s>``, ``</s>`` never proposed; argmax, or a
        sample at ``--temperature`` with ``--sampling``), then ``--decoding-strategy``'s
        commit and re-mask (``ReverseStrategy.reverse_step``). Returns the next
        :class:`Canvases`."""
        tokens, scores = canvases.tokens, canvases.scores
        decodable = self.decodable_positions(tokens, canvases.prompt_lengths)
        head_positions = self.head_positions(tokens, decodable)
        logits, cache = self.step_logits(model, canvases, head_positions)
        logits[:, self.never_emitted] = float("-inf")
        best_tokens, best_scores, best_confidence = token_proposals(
            logits, self.temperature, self.sampling, str(self.decoding.unmasking_confidence),
            temperature_scales_scores=self.decoding.temperature_scales_scores,
        )
        proposal_tokens = tokens.masked_scatter(head_positions, best_tokens)
        proposal_scores = torch.zeros_like(scores).masked_scatter(head_positions, best_scores)
        proposal_confidence = torch.zeros_like(scores).masked_scatter(
            head_positions, best_confidence
        )
        canvas_scores = None
        if self.strategy.reads_canvas_scores:
            canvas_scores = torch.zeros_like(scores).masked_scatter(head_positions, token_log_probs(
                logits, tokens[head_positions], self.temperature, self.decoding.temperature_scales_scores,
            ))
        step = canvases.step + 1
        tokens, scores = self.strategy.reverse_step(
            tokens, scores, decodable, proposal_tokens, proposal_scores, step, self.max_iter,
            self.mask, proposal_confidence=proposal_confidence, canvas_scores=canvas_scores,
        )
        history = canvases.history
        if history is not None:
            history = history + [tokens.clone()]
        return dataclasses.replace(
            canvases, tokens=tokens, scores=scores, step=step, cache=cache, history=history
        )

    def head_positions(self, tokens, decodable):
        """Where a step runs the LM head and its softmax, bool (N, L): the positions the
        strategy may still change (every target position for RDM's re-masking
        strategies, the masked ones for the others)."""
        if self.strategy.revises_committed:
            return decodable
        return decodable & tokens.eq(self.mask)

    def step_logits(self, model, canvases, head_positions):
        """The logits (head_positions.sum(), V) of one step and the prompt cache after it:
        classifier-free guided with ``--guidance-scale`` w > 0, ``u + (1 + w) (c - u)``
        where ``u`` comes from the canvas with its prompt (all but ``<s>``) masked; with
        ``--prompt-cache`` from the target alone (:meth:`cached_logits`); else from the
        whole canvas."""
        tokens, prompt_lengths = canvases.tokens, canvases.prompt_lengths
        guidance_scale = self.decoding.guidance_scale
        if guidance_scale > 0:
            positions = utils.new_arange(tokens, *tokens.size())
            in_prompt = (positions >= 1) & (positions < prompt_lengths.unsqueeze(1))
            unconditional = tokens.masked_fill(in_prompt, self.mask)
            both = torch.cat([tokens, unconditional], dim=0)
            logits = model.logits(both, head_positions.repeat(2, 1), prompt_lengths.repeat(2))
            conditional_logits, unconditional_logits = logits.chunk(2, dim=0)
            guided = unconditional_logits + (1 + guidance_scale) * (
                conditional_logits - unconditional_logits
            )
            return guided, canvases.cache
        if self.decoding.prompt_cache:
            return self.cached_logits(model, canvases, head_positions)
        return model.logits(tokens, head_positions, prompt_lengths), canvases.cache

    def cached_logits(self, model, canvases, head_positions):
        """(logits, cache) of a step with the prompt cache. A full pass, whose prompt
        states become the new cache, runs when there is none (a full-attention model's
        first step) or at every ``--prompt-cache-refresh``-th step (0: never); otherwise
        only the target runs through the layers."""
        tokens, prompt_lengths = canvases.tokens, canvases.prompt_lengths
        refresh = self.decoding.prompt_cache_refresh
        if canvases.cache is None or (refresh > 0 and canvases.step % refresh == 0):
            features, layer_inputs = model.encode(tokens, prompt_lengths)
            cache = PromptCache.from_layer_inputs(layer_inputs, prompt_lengths, canvases.prompt_width)
            return model.output_layer(features, head_positions), cache
        return model.logits(tokens, head_positions, prompt_lengths, canvases.cache), canvases.cache

    def decodable_positions(self, tokens, prompt_lengths):
        """Target content positions (after the prompt, before the final ``</s>``) of
        canvases tokens (N, L): bool (N, L)."""
        positions = utils.new_arange(tokens, *tokens.size())
        end = tokens.ne(self.pad).sum(1, keepdim=True) - 1
        return (positions >= prompt_lengths.unsqueeze(1)) & (positions < end)

    # ---------------------------------------------------------- the candidates
    def hypothesis(self, final, prompt_length, length):
        """The fairseq hypothesis dict of one finished canvas ``final`` (see
        :meth:`denoise`) whose target of ``length`` tokens starts at ``prompt_length``."""
        final_tokens, final_scores, final_steps, final_history = final
        start = prompt_length
        tokens = final_tokens[start : start + length + 1]
        positional_scores = final_scores[start : start + length + 1].clone()
        positional_scores[-1] = 0.0
        hypo = {
            "tokens": tokens,
            "positional_scores": positional_scores,
            "score": positional_scores[:-1].mean() if length else positional_scores.sum(),
            "hypo_attn": None,
            "alignment": None,
            "steps": final_steps,
        }
        if self.retain_history:
            hypo["history"] = [
                {
                    "tokens": h[start : start + length + 1],
                    "positional_scores": None,
                    "score": None,
                    "hypo_attn": None,
                    "alignment": None,
                }
                for h in final_history
            ]
        return hypo

    def length_log_probs(self, length_logits, lengths):
        """log P(L) under the length head of the lengths (N,) of the N = B * num_candidates
        canvases, from length_logits (B, C): (N,), -inf outside the head's classes."""
        log_probs = length_logits.float().log_softmax(-1).repeat_interleave(self.num_candidates, dim=0)
        classes = classes_of_lengths(lengths)
        inside = (classes >= 0) & (classes < log_probs.size(-1))
        picked = log_probs.gather(1, classes.clamp(0, log_probs.size(-1) - 1).unsqueeze(1))
        return picked.squeeze(1).masked_fill(~inside, float("-inf"))

    def select(self, hypos):
        """Order one sentence's candidates best-first.

        ``score``: by mean token log-prob. ``joint``: by the joint log-prob of the
        tokens and the length per factor, (sum_i log p_i + log P(L)) / (L + 1).
        ``mbr-bleu`` / ``mbr-chrf``: minimum Bayes risk, by the mean sentence-level
        sacreBLEU / chrF of a candidate against the other candidates (stored as
        ``mbr_utility``), ties broken by mean log-prob.
        """
        selection = str(self.decoding.candidate_selection)
        if selection == "score" or len(hypos) == 1:
            return sorted(hypos, key=lambda h: float(h["score"]), reverse=True)
        if selection == "joint":
            def joint(hypo):
                length = hypo["tokens"].numel() - 1
                tokens_log_prob = float(hypo["positional_scores"][:-1].sum())
                return (tokens_log_prob + float(hypo["length_score"])) / (length + 1)
            return sorted(hypos, key=joint, reverse=True)
        metric = sacrebleu.sentence_bleu if selection == "mbr-bleu" else sacrebleu.sentence_chrf
        texts = [self.tgt_dict.string(h["tokens"], self.post_process) for h in hypos]
        for i, hypo in enumerate(hypos):
            others = [text for j, text in enumerate(texts) if j != i]
            hypo["mbr_utility"] = sum(metric(texts[i], [o]).score for o in others) / len(others)
        return sorted(
            hypos, key=lambda h: (h["mbr_utility"], float(h["score"])), reverse=True
        )

    @staticmethod
    def collapse_repeats(hypo):
        """``hypo`` with each token equal to the one before it dropped (``--collapse-repeats``;
        the final ``</s>`` is kept), its positional scores alike; its rank is unchanged."""
        tokens = hypo["tokens"]
        keep = torch.ones_like(tokens, dtype=torch.bool)
        keep[1:-1] = tokens[1:-1].ne(tokens[:-2])
        return {**hypo, "tokens": tokens[keep], "positional_scores": hypo["positional_scores"][keep]}
