"""The reverse process: what one denoising step commits and what it re-masks.

Every step the model proposes a token at each target position (:func:`token_proposals`);
a :class:`ReverseStrategy` decides which masked positions take their proposal and which
committed positions become ``<mask>`` again. Each strategy is one class registered by
the first word of its ``--decoding-strategy`` name (:func:`register_strategy`, as
fairseq registers its components): its name grammar and help, its selection
(:meth:`ReverseStrategy.select`), whether it revises committed tokens, whether it ranks
by ``--unmasking-confidence`` and when a canvas without ``<mask>`` may still change. The
option's help, :class:`~diffusion_plugin.decoding_config.DecodingConfig`'s validation and
the tests' lists of strategies all come from ``STRATEGIES``. The step counts of the
scheduled strategies are the noise schedule's (``schedules.py``).
"""

import math
import re
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Tuple, Type

import torch
from torch import Tensor

from diffusion_plugin.schedules import NOISE_SCHEDULES, masked_fraction_after, num_masked_after

CONFIDENCES = ("prob", "margin", "entropy")
STRATEGIES: Dict[str, Type["ReverseStrategy"]] = {}
"""kind -> the strategy class whose names start with it."""


def register_strategy(kind: str):
    """Decorator: register a :class:`ReverseStrategy` subclass as ``kind``."""

    def register(cls):
        if kind in STRATEGIES:
            raise ValueError(f"decoding strategy {kind!r} is already registered")
        cls.kind = kind
        STRATEGIES[kind] = cls
        return cls

    return register


def strategy_help() -> str:
    """Every registered strategy's grammar and summary, for ``--decoding-strategy``."""
    strategies = "; ".join(
        f"{cls.grammar}: {cls.summary}" + (" (ranked by --unmasking-confidence)" if cls.ranks_by_confidence else "")
        for cls in STRATEGIES.values()
    )
    return f"{strategies}; <schedule>: {' or '.join(NOISE_SCHEDULES)}"


def example_strategies(random: Optional[bool] = None) -> List[str]:
    """The example names of every registered strategy (the tests decode with each),
    only those that draw random numbers (``random=True``) or none (``False``) if asked."""
    names = [name for cls in STRATEGIES.values() for name in cls.examples]
    return [n for n in names if random is None or ReverseStrategy.parse(n).random == random]


def schedule_suffix(optional: bool = False) -> str:
    """Regex of a ``-<schedule>`` suffix naming a registered noise schedule, as group
    ``schedule``."""
    group = "(-(?P<schedule>" + "|".join(map(re.escape, NOISE_SCHEDULES)) + "))"
    return group + ("?" if optional else "")


def optional_schedule(kind: str, name: str, default: str) -> Optional[str]:
    """The schedule that ``name`` = ``kind[-<schedule>]`` names (``default`` if none), or
    None if ``name`` is not of that form."""
    match = re.fullmatch(re.escape(kind) + schedule_suffix(optional=True), name)
    return None if match is None else match["schedule"] or default


NUMBER = r"[0-9]*\.?[0-9]+"


@dataclass
class StepInputs:
    """One reverse step of B canvases of width L, each tensor (B, L).

    ``tokens``: the canvas; ``scores``: the log-prob each committed token had when it was
    committed (-inf while masked); ``decodable``: target content positions;
    ``masked``: decodable positions that are ``<mask>``; ``proposal_tokens`` /
    ``proposal_scores`` / ``proposal_confidence``: the model's token at each position, its
    log-prob and its log-confidence; ``canvas_scores``: this step's log-prob of each
    canvas token (only for strategies with ``reads_canvas_scores``); ``step`` (1-based)
    of ``max_step``; ``generator``: the random generator of stochastic strategies.
    """

    tokens: Tensor
    scores: Tensor
    decodable: Tensor
    masked: Tensor
    proposal_tokens: Tensor
    proposal_scores: Tensor
    proposal_confidence: Tensor
    canvas_scores: Optional[Tensor]
    step: int
    max_step: int
    generator: Optional[torch.Generator] = None

    @property
    def last(self) -> bool:
        """Whether this step must commit every position."""
        return self.step >= self.max_step


@dataclass(frozen=True)
class ReverseStrategy:
    """How a reverse step chooses the positions it commits and re-masks (a registered
    subclass per kind; :meth:`parse` a name into one)."""

    kind: ClassVar[str]
    grammar: ClassVar[str]
    """The names it accepts, e.g. ``threshold<p>``."""
    summary: ClassVar[str]
    """One line of help: where it comes from and what it does."""
    examples: ClassVar[Tuple[str, ...]]
    """Names the tests decode with (at least one)."""
    revises_committed: ClassVar[bool] = False
    """Whether a step may re-mask or rank committed tokens by their new proposals (then
    the LM head runs at every target position, not only the masked ones)."""
    ranks_by_confidence: ClassVar[bool] = False
    """Whether it reads ``--unmasking-confidence`` (else only ``prob`` is allowed)."""
    reads_canvas_scores: ClassVar[bool] = False
    """Whether it needs each step's log-prob of the canvas's own tokens."""

    @classmethod
    def parse(cls, name: str) -> "ReverseStrategy":
        """The strategy that ``name`` denotes; a ValueError naming --decoding-strategy
        and every registered grammar if none accepts it."""
        for strategy_class in STRATEGIES.values():
            strategy = strategy_class.from_name(name)
            if strategy is not None:
                return strategy
        raise ValueError(
            f"--decoding-strategy {name!r} is not understood; expected one of {strategy_help()}; "
            "e.g. reparam-uncond-deterministic-cosine or threshold0.9"
        )

    @classmethod
    def from_name(cls, name: str) -> Optional["ReverseStrategy"]:
        """This class's strategy named ``name``, or None if ``name`` is not one of its."""
        raise NotImplementedError

    @property
    def random(self) -> bool:
        """Whether its selection draws random numbers (then outputs depend on the seed)."""
        return False

    def select(self, inputs: StepInputs) -> Tuple[Tensor, Tensor]:
        """(to_mask, to_fill), bool (B, L) each: decodable committed positions that become
        ``<mask>`` and masked positions that take their proposal. At the last step
        ``to_fill`` must hold every masked position."""
        raise NotImplementedError

    def may_change_unmasked(self, num_tokens: Tensor, step: int, max_step: int) -> Tensor:
        """Bool (B,): whether a step after ``step`` may still change a canvas of
        ``num_tokens`` (B,) target positions that holds no ``<mask>`` (by default no: a
        step changes only canvases with masks, so a canvas without one is final)."""
        return torch.zeros_like(num_tokens, dtype=torch.bool)

    def reverse_step(
        self,
        tokens: Tensor,
        scores: Tensor,
        decodable: Tensor,
        proposal_tokens: Tensor,
        proposal_scores: Tensor,
        step: int,
        max_step: int,
        mask_idx: int,
        proposal_confidence: Optional[Tensor] = None,
        canvas_scores: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[Tensor, Tensor]:
        """One step of the reverse process over canvases ``tokens`` (B, L) (see
        :class:`StepInputs`; the confidence defaults to the log-prob). Returns the new
        (tokens, scores): filled positions take their proposal and its log-prob,
        re-masked ones ``mask_idx`` and -inf."""
        if proposal_confidence is None:
            proposal_confidence = proposal_scores
        inputs = StepInputs(
            tokens, scores, decodable, tokens.eq(mask_idx) & decodable, proposal_tokens,
            proposal_scores, proposal_confidence, canvas_scores, step, max_step, generator,
        )
        to_mask, to_fill = self.select(inputs)
        tokens = torch.where(to_fill, proposal_tokens, tokens).masked_fill(to_mask, mask_idx)
        scores = torch.where(to_fill, proposal_scores, scores).masked_fill(to_mask, float("-inf"))
        return tokens, scores


def lowest(ranking: Tensor, candidates: Tensor, count: Tensor) -> Tensor:
    """The ``count`` (B,) lowest-ranked ``candidates`` of each row: bool (B, L).

    Ties go to the leftmost position (stable sort), so exactly ``min(count, candidates)``
    are chosen.
    """
    ranking = ranking.float().masked_fill(~candidates, float("inf"))
    rank = ranking.argsort(dim=1, stable=True).argsort(dim=1)
    return (rank < count.unsqueeze(1)) & candidates


def most_confident(confidence: Tensor, candidates: Tensor) -> Tensor:
    """The one most confident of ``candidates`` in each row that has any: bool (B, L)."""
    best = confidence.masked_fill(~candidates, float("-inf")).argmax(1, keepdim=True)
    return torch.zeros_like(candidates).scatter(1, best, True) & candidates


# ---------------------------------------------------------------- RDM
@register_strategy("reparam")
@dataclass(frozen=True)
class Reparameterized(ReverseStrategy):
    """RDM's reparameterised sampler (the paper's).

    Rank every target position by its new proposal's confidence (plus Gumbel noise of
    scale ``c * rate`` for ``stochastic<c>``); the scheduled number
    ``floor(N * rate(K - s, K))`` of lowest-ranked positions is masked after the step.
    ``uncond`` re-masks every committed token among them; ``cond`` only those whose new
    proposal is the same token with a lower log-prob than the stored one, so a canvas can
    run out of masks while later steps still re-mask (:meth:`may_change_unmasked`).
    Every other masked position takes its proposal.
    """

    grammar = "reparam-{cond,uncond}-{deterministic,stochastic<c>}-<schedule>"
    summary = "RDM's reparameterised sampler"
    examples = ("reparam-uncond-deterministic-cosine", "reparam-cond-deterministic-linear",
                "reparam-uncond-stochastic1.0-cosine", "reparam-uncond-stochastic2.0-linear")
    revises_committed = True
    ranks_by_confidence = True

    conditional_remask: bool = False
    gumbel_scale: float = 0.0
    schedule: str = "cosine"

    @classmethod
    def from_name(cls, name):
        pattern = (rf"reparam-(?P<remask>cond|uncond)-"
                   rf"(?P<selection>deterministic|stochastic(?P<noise>{NUMBER})){schedule_suffix()}")
        match = re.fullmatch(pattern, name)
        if match is None:
            return None
        return cls(conditional_remask=match["remask"] == "cond",
                   gumbel_scale=float(match["noise"]) if match["noise"] else 0.0,
                   schedule=match["schedule"])

    @property
    def random(self):
        return self.gumbel_scale > 0

    def select(self, inputs):
        rate = masked_fraction_after(inputs.step, inputs.max_step, self.schedule)
        num_masked = num_masked_after(inputs.decodable.sum(1), inputs.step, inputs.max_step, self.schedule)
        ranking = inputs.proposal_confidence.float()
        if self.gumbel_scale > 0:
            uniform = torch.rand(ranking.shape, generator=inputs.generator, device=ranking.device)
            gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
            ranking = ranking + self.gumbel_scale * rate * gumbel
        stays_masked = lowest(ranking, inputs.decodable, num_masked)
        if self.conditional_remask:
            same_but_less_likely = inputs.proposal_tokens.eq(inputs.tokens) & (inputs.proposal_scores < inputs.scores)
            remask_committed = stays_masked & same_but_less_likely
        else:
            remask_committed = stays_masked
        committed = ~inputs.masked & inputs.decodable
        to_mask = (committed & remask_committed) | (inputs.masked & stays_masked)
        return to_mask, inputs.masked & ~stays_masked

    def may_change_unmasked(self, num_tokens, step, max_step):
        """Only ``cond`` may: the scheduled count never grows, so the next step's decides."""
        if not self.conditional_remask or step >= max_step:
            return super().may_change_unmasked(num_tokens, step, max_step)
        return num_masked_after(num_tokens, step + 1, max_step, self.schedule) > 0


# ---------------------------------------------------------------- CMLM
@register_strategy("mask-predict")
@dataclass(frozen=True)
class MaskPredict(ReverseStrategy):
    """CMLM's mask-predict: rank committed tokens by their stored log-prob and masked
    positions by their new proposal's; the scheduled number of lowest-ranked positions is
    masked after the step (default schedule: linear, as in CMLM)."""

    grammar = "mask-predict[-<schedule>]"
    summary = "CMLM's mask-predict"
    examples = ("mask-predict", "mask-predict-cosine")

    schedule: str = "linear"

    @classmethod
    def from_name(cls, name):
        schedule = optional_schedule("mask-predict", name, default="linear")
        return None if schedule is None else cls(schedule=schedule)

    def select(self, inputs):
        num_masked = num_masked_after(inputs.decodable.sum(1), inputs.step, inputs.max_step, self.schedule)
        ranking = torch.where(inputs.masked, inputs.proposal_scores, inputs.scores)
        stays_masked = lowest(ranking, inputs.decodable, num_masked)
        return stays_masked & ~inputs.masked, inputs.masked & ~stays_masked


# ---------------------------------------------------------------- ancestral
@register_strategy("ancestral")
@dataclass(frozen=True)
class Ancestral(ReverseStrategy):
    """Random ancestral unmasking: each masked position takes its proposal with
    probability 1 / (K - s + 1) (the linear schedule in expectation); never re-masks."""

    grammar = "ancestral"
    summary = "random unmasking"
    examples = ("ancestral",)

    @classmethod
    def from_name(cls, name):
        return cls() if name == "ancestral" else None

    @property
    def random(self):
        return True

    def select(self, inputs):
        unmask_prob = 1.0 / (inputs.max_step - inputs.step + 1) if not inputs.last else 1.0
        draw = torch.rand(inputs.tokens.shape, generator=inputs.generator, device=inputs.tokens.device)
        return torch.zeros_like(inputs.decodable), inputs.masked & (draw < unmask_prob)


# ---------------------------------------------------------------- Fast-dLLM
@register_strategy("threshold")
@dataclass(frozen=True)
class Threshold(ReverseStrategy):
    """Fast-dLLM's parallel decoding: commit every masked position whose confidence
    reaches ``p`` (0 < p <= 1), at least the most confident one; never re-masks."""

    grammar = "threshold<p>"
    summary = "Fast-dLLM's confidence threshold"
    examples = ("threshold0.05",)
    ranks_by_confidence = True

    threshold: float = 1.0

    @classmethod
    def from_name(cls, name):
        match = re.fullmatch(rf"threshold(?P<p>{NUMBER})", name)
        if match is None or not 0.0 < float(match["p"]) <= 1.0:
            return None
        return cls(threshold=float(match["p"]))

    def select(self, inputs):
        confident = inputs.proposal_confidence >= math.log(self.threshold)
        best = most_confident(inputs.proposal_confidence, inputs.masked)
        to_fill = inputs.masked & (confident | best | inputs.last)
        return torch.zeros_like(inputs.decodable), to_fill


# ---------------------------------------------------------------- DUS
OFFSET_BITS = 20
"""Bits of a target offset in the dilated order (targets up to 2**20 tokens)."""


def dilated_order(offsets: Tensor) -> Tensor:
    """The rank of each target offset (LongTensor, any shape) in the dilated order: its
    bit reversal, so 0, 8, 4, 12, 2, ... for 16 offsets: the stride halves level by level
    and every even offset comes before every odd one, whatever the target's length."""
    order = torch.zeros_like(offsets)
    for _ in range(OFFSET_BITS):
        order = (order << 1) | (offsets & 1)
        offsets = offsets >> 1
    return order


@register_strategy("dilated")
@dataclass(frozen=True)
class Dilated(ReverseStrategy):
    """Dilated unmasking (DUS, Luxembourg et al., 2025, arXiv 2506.19037): a step never
    commits two adjacent target positions, so no two neighbours are guessed together.

    Each step commits the schedule's count, ``masked now - floor(N * rate(K - s, K))``,
    of masked positions in the dilated order of their target offsets
    (:func:`dilated_order`: 0, 4, 8, ... then 2, 6, ... then the odd ones), but never
    even and odd offsets in the same step: a step that reaches the last even offset
    stops there, and the next steps catch up with the schedule. Step K - 1 commits every
    even offset left, so step K commits odd ones only; no two committed in one step are
    neighbours whenever K >= 2 (with K = 1 the one step commits everything). Never
    re-masks; the order is fixed, not ranked by confidence.
    """

    grammar = "dilated[-<schedule>]"
    summary = "dilated unmasking (DUS): never two neighbours in one step, default schedule cosine"
    examples = ("dilated", "dilated-linear")

    schedule: str = "cosine"

    @classmethod
    def from_name(cls, name):
        schedule = optional_schedule("dilated", name, default="cosine")
        return None if schedule is None else cls(schedule=schedule)

    def select(self, inputs):
        nothing = torch.zeros_like(inputs.decodable)
        if inputs.last:
            return nothing, inputs.masked
        positions = torch.arange(inputs.tokens.size(1), device=inputs.tokens.device).expand_as(inputs.tokens)
        first = inputs.decodable.long().argmax(1, keepdim=True)  # the row's first target position
        offsets = (positions - first).clamp(min=0)
        masked_even = inputs.masked & (offsets % 2 == 0)
        phase = torch.where(masked_even.any(1, keepdim=True), masked_even, inputs.masked)
        num_masked = num_masked_after(inputs.decodable.sum(1), inputs.step, inputs.max_step, self.schedule)
        count = (inputs.masked.sum(1) - num_masked).clamp(min=0)
        if inputs.step == inputs.max_step - 1:  # leave only odd offsets to the last step
            count = torch.maximum(count, masked_even.sum(1))
        return nothing, lowest(dilated_order(offsets), phase, count)


# ---------------------------------------------------------------- WINO
@register_strategy("wino")
@dataclass(frozen=True)
class DraftAndVerify(ReverseStrategy):
    """Draft and verify (WINO, "wide in, narrow out", Hong et al., 2025, arXiv 2507.18578).

    Draft: every masked position whose proposal has probability >= ``draft`` takes it,
    at least the most probable one. Verify: every token committed at an earlier step
    whose probability under this step's forward is below ``verify`` becomes ``<mask>``
    again, the least probable first and at most one fewer than the step drafts, so each
    step leaves at least one mask fewer and decoding ends. A canvas without ``<mask>``
    is final (verification runs while drafting); step K commits every position and
    re-masks none. Ranks by probability, not ``--unmasking-confidence``.
    """

    grammar = "wino<draft>-<verify>"
    summary = "WINO draft and verify: draft at probability >= draft, re-mask committed tokens below verify (0 < draft <= verify <= 1)"
    examples = ("wino0.5-0.9", "wino0.1-0.5")
    revises_committed = True
    reads_canvas_scores = True

    draft: float = 0.5
    verify: float = 0.9

    @classmethod
    def from_name(cls, name):
        match = re.fullmatch(rf"wino(?P<draft>{NUMBER})-(?P<verify>{NUMBER})", name)
        if match is None or not 0.0 < float(match["draft"]) <= float(match["verify"]) <= 1.0:
            return None
        return cls(draft=float(match["draft"]), verify=float(match["verify"]))

    def select(self, inputs):
        if inputs.last:
            return torch.zeros_like(inputs.decodable), inputs.masked
        confident = inputs.proposal_scores >= math.log(self.draft)
        drafted = inputs.masked & (confident | most_confident(inputs.proposal_scores, inputs.masked))
        committed = inputs.decodable & ~inputs.masked
        doubtful = committed & (inputs.canvas_scores < math.log(self.verify))
        most_remasked = (drafted.sum(1) - 1).clamp(min=0)
        return lowest(inputs.canvas_scores, doubtful, most_remasked), drafted


# -------------------------------------------------------------------- token proposals
def token_proposals(logits: Tensor, temperature: float = 1.0, sampling: bool = False,
                    confidence: str = "prob", generator: Optional[torch.Generator] = None,
                    temperature_scales_scores: bool = False):
    """The reverse step's proposal at every position from the model's logits.

    logits (N, V) with forbidden symbols at -inf. Returns (tokens (N,), log-prob of
    each token (N,), log-confidence (N,)): the argmax of ``softmax(logits)``, or with
    ``sampling`` a sample of ``softmax(logits / temperature)``; scores and confidences
    come from the untempered ``softmax(logits)``, as in the official code, unless
    ``temperature_scales_scores`` (then from ``softmax(logits / temperature)``). The
    confidence is that token's probability (``prob``), the gap between the two most
    likely tokens (``margin``) or one minus the normalised entropy (``entropy``), all
    in [0, 1], returned as logs.
    """
    log_probs = torch.log_softmax(logits.float() / (temperature if temperature_scales_scores else 1.0), dim=-1)
    if sampling:
        tempered = log_probs
        if temperature != 1.0 and not temperature_scales_scores:
            tempered = torch.log_softmax(logits.float() / temperature, dim=-1)
        tokens = torch.multinomial(tempered.exp(), 1, generator=generator).squeeze(-1)
    else:
        tokens = log_probs.argmax(-1)
    scores = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if confidence == "prob":
        return tokens, scores, scores
    probs = log_probs.exp()
    if confidence == "margin":
        top2 = probs.topk(2, dim=-1).values
        value = top2[:, 0] - top2[:, 1]
    else:  # entropy
        entropy = -(probs * log_probs.clamp(min=-1e4)).sum(-1)
        allowed = torch.isfinite(logits).sum(-1).clamp(min=2).float()
        value = 1.0 - entropy / allowed.log()
    return tokens, scores, value.clamp(min=1e-12).log()


def token_log_probs(logits: Tensor, tokens: Tensor, temperature: float = 1.0,
                    temperature_scales_scores: bool = False) -> Tensor:
    """The log-prob (N,) of given tokens (N,) under logits (N, V), scored as
    :func:`token_proposals` scores its proposals (-inf for a forbidden symbol)."""
    log_probs = torch.log_softmax(logits.float() / (temperature if temperature_scales_scores else 1.0), dim=-1)
    return log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
