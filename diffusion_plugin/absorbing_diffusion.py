"""Absorbing-state (``<mask>``) discrete diffusion over target tokens.

One object holds both directions of the process so that the criterion (forward
noising) and the generator (reverse denoising) cannot drift apart:

* forward: a target token is replaced by ``<mask>`` with probability ``t/T``,
  ``t ~ U{1..T}``; RDM's *coupled* draw gives two nested noised copies per
  example (Zheng et al., 2023, "A Reparameterized Discrete Diffusion Model for
  Text Generation"; Ye et al., 2023, §3).
* reverse: every step proposes a token for each target position; a
  :class:`ReverseStrategy` decides which proposals are committed and which
  positions stay (or become again) ``<mask>``: RDM's reparameterised sampler
  (keep ``floor(N * schedule(s / K))`` of the least confident positions masked),
  CMLM's mask-predict, random ancestral unmasking, or Fast-dLLM's confidence
  threshold.
"""

import math
import re
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

DEFAULT_NUM_STEPS = 50
"""T unless --num-diffusion-steps says otherwise."""
WEIGHTINGS = ("linear", "constant", "elbo")
CONFIDENCES = ("prob", "margin", "entropy")
STRATEGY_HELP = (
    "reparam-{cond,uncond}-{deterministic,stochastic<c>}-{cosine,linear} (RDM), "
    "mask-predict[-{linear,cosine}] (CMLM), ancestral (random unmasking), "
    "threshold<p> (Fast-dLLM parallel decoding)"
)
REPARAM_PATTERN = re.compile(
    r"^reparam-(?P<remask>cond|uncond)-"
    r"(?P<selection>deterministic|stochastic(?P<noise>[0-9]*\.?[0-9]+))-"
    r"(?P<schedule>cosine|linear)$"
)
MASK_PREDICT_PATTERN = re.compile(r"^mask-predict(-(?P<schedule>cosine|linear))?$")
THRESHOLD_PATTERN = re.compile(r"^threshold(?P<threshold>[0-9]*\.?[0-9]+)$")


@dataclass(frozen=True)
class ReverseStrategy:
    """How a reverse step chooses the positions it commits and re-masks.

    ``kind`` is ``reparam`` (RDM: rank every target position by the new proposal's
    confidence, keep the scheduled number of lowest masked, re-masking committed
    tokens), ``mask-predict`` (CMLM: rank by the stored score of each committed
    token and the new one of each filled position), ``ancestral`` (unmask each
    masked position with probability 1 / (K - s + 1), never re-mask) or
    ``threshold`` (commit every masked position whose confidence reaches
    ``threshold``, at least the most confident one, never re-mask).
    """

    kind: str
    conditional_remask: bool = False
    gumbel_scale: float = 0.0
    schedule: str = "cosine"
    threshold: float = 1.0

    @property
    def revises_committed(self) -> bool:
        """Whether a step may re-mask or rank committed tokens by their new proposals."""
        return self.kind == "reparam"

    @classmethod
    def parse(cls, name: str) -> "ReverseStrategy":
        match = REPARAM_PATTERN.match(name)
        if match is not None:
            return cls(
                kind="reparam",
                conditional_remask=match["remask"] == "cond",
                gumbel_scale=float(match["noise"]) if match["noise"] else 0.0,
                schedule=match["schedule"],
            )
        match = MASK_PREDICT_PATTERN.match(name)
        if match is not None:
            return cls(kind="mask-predict", schedule=match["schedule"] or "linear")
        if name == "ancestral":
            return cls(kind="ancestral", schedule="linear")
        match = THRESHOLD_PATTERN.match(name)
        if match is not None and 0.0 < float(match["threshold"]) <= 1.0:
            return cls(kind="threshold", threshold=float(match["threshold"]))
        raise ValueError(
            f"--decoding-strategy {name!r} is not understood; expected {STRATEGY_HELP}, "
            "e.g. reparam-uncond-deterministic-cosine or threshold0.9 (0 < p <= 1)"
        )


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


class AbsorbingDiffusion:
    """Masking diffusion with ``num_steps`` (T) steps and absorbing token ``mask_idx``."""

    def __init__(self, mask_idx: int, num_steps: int = DEFAULT_NUM_STEPS):
        if num_steps < 1:
            raise ValueError(f"--num-diffusion-steps must be >= 1, got {num_steps}")
        self.mask_idx = mask_idx
        self.num_steps = num_steps

    # ------------------------------------------------------------------ forward
    def sample_time(self, batch_size: int, device=None) -> Tensor:
        """Draw ``t ~ U{1..T}``: LongTensor (batch_size,)."""
        return torch.randint(1, self.num_steps + 1, (batch_size,), device=device)

    def q_sample(self, x0: Tensor, maskable: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        """Mask each maskable token of row b independently with probability t_b / T.

        x0, maskable: (B, L); t: (B,). Returns (x_t (B, L), masked (B, L) bool).
        """
        ratio = (t.float() / self.num_steps).unsqueeze(1)
        masked = (torch.rand(x0.shape, device=x0.device) < ratio) & maskable
        return x0.masked_fill(masked, self.mask_idx), masked

    def q_sample_coupled(self, x0: Tensor, maskable: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """RDM's coupled draw: two nested noised copies of every row.

        With ``t_a >= t_b`` drawn from two uniform times, ``x_{t_a} ~ q(. | x_0)`` and
        ``x_{t_b} ~ q(. | x_{t_a}, x_0)`` (each masked token of ``x_{t_a}`` stays masked
        with probability ``t_b / t_a``); when ``t_a == t_b`` the second copy is an
        independent draw. x0, maskable: (B, L). Returns (x_t (2B, L), masked (2B, L),
        t (2B,)), rows ``[:B]`` at ``t_a`` and rows ``[B:]`` at ``t_b``.
        """
        batch_size = x0.size(0)
        pair = self.sample_time(2 * batch_size, device=x0.device).view(2, batch_size)
        t_a, t_b = pair.max(dim=0).values, pair.min(dim=0).values
        _, masked_a = self.q_sample(x0, maskable, t_a)
        keep_prob = (t_b.float() / t_a.float()).unsqueeze(1)
        masked_b = masked_a & (torch.rand(x0.shape, device=x0.device) < keep_prob)
        _, independent_b = self.q_sample(x0, maskable, t_b)
        masked_b = torch.where((t_a == t_b).unsqueeze(1), independent_b, masked_b)
        masked = torch.cat([masked_a, masked_b], dim=0)
        x_t = x0.repeat(2, 1).masked_fill(masked, self.mask_idx)
        return x_t, masked, torch.cat([t_a, t_b], dim=0)

    def loss_weight(self, t: Tensor, weighting: str) -> Tensor:
        """Per-row weight of the reweighted objective: FloatTensor like ``t``.

        ``linear``: T - t + 1 (RDM/Diffusion-LLM default, T * lambda_t);
        ``constant``: T; ``elbo``: T / t (the ELBO's 1/t times the importance weight
        T of uniform time sampling, RDM's ``reciprocal``).
        """
        t = t.float()
        if weighting == "linear":
            return self.num_steps - t + 1
        if weighting == "constant":
            return torch.full_like(t, float(self.num_steps))
        if weighting == "elbo":
            return self.num_steps / t
        raise ValueError(f"unknown weighting {weighting!r}; choose from {WEIGHTINGS}")

    # ------------------------------------------------------------------ reverse
    @staticmethod
    def schedule_rate(step: int, max_step: int, schedule: str) -> float:
        """Fraction of target positions left masked after reverse step ``step`` (1-based).

        ``cos(pi s / 2K)`` for ``cosine``, ``1 - s / K`` for ``linear``; zero at ``s = K``.
        """
        if step >= max_step:
            return 0.0
        if schedule == "cosine":
            return math.cos(math.pi * step / (2 * max_step))
        return 1.0 - step / max_step

    @classmethod
    def num_masked_after(cls, num_tokens: Tensor, step: int, max_step: int, schedule: str) -> Tensor:
        """``floor(N * schedule_rate(step))`` for each row; num_tokens: LongTensor (B,)."""
        rate = cls.schedule_rate(step, max_step, schedule)
        return (num_tokens.double() * rate).floor().long()

    @classmethod
    def may_change_unmasked(cls, num_tokens: Tensor, step: int, max_step: int,
                            strategy: ReverseStrategy) -> Tensor:
        """Bool (B,): whether a step after ``step`` may still change a canvas of
        ``num_tokens`` (B,) target positions that holds no ``<mask>``.

        Only RDM's conditional re-masking (``reparam-cond-*``) may: it re-masks part of
        the scheduled lowest-ranked positions, so a canvas can run out of masks while
        later steps still re-mask. The scheduled count never grows, so the next step's
        decides. Every other strategy leaves exactly the scheduled count masked (or
        never re-masks), so a canvas without ``<mask>`` stays as it is.
        """
        if not (strategy.kind == "reparam" and strategy.conditional_remask) or step >= max_step:
            return torch.zeros_like(num_tokens, dtype=torch.bool)
        return cls.num_masked_after(num_tokens, step + 1, max_step, strategy.schedule) > 0

    def reverse_step(
        self,
        tokens: Tensor,
        scores: Tensor,
        decodable: Tensor,
        proposal_tokens: Tensor,
        proposal_scores: Tensor,
        step: int,
        max_step: int,
        strategy: ReverseStrategy,
        proposal_confidence: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[Tensor, Tensor]:
        """One step of the reverse process (see :class:`ReverseStrategy`).

        tokens (B, L): the canvas; scores (B, L): log-prob of each committed token
        (-inf while masked); decodable (B, L): target content positions;
        proposal_tokens / proposal_scores / proposal_confidence (B, L): the model's
        token, its log-prob and its log-confidence (default: the log-prob) at every
        decodable position. Step ``max_step`` commits every position. Returns the new
        (tokens, scores).
        """
        if proposal_confidence is None:
            proposal_confidence = proposal_scores
        still_masked = tokens.eq(self.mask_idx) & decodable
        if strategy.kind == "reparam":
            to_mask, to_fill = self._reparam_selection(
                tokens, scores, decodable, still_masked, proposal_tokens, proposal_scores,
                proposal_confidence, step, max_step, strategy, generator,
            )
        elif strategy.kind == "mask-predict":
            num_masked = self.num_masked_after(decodable.sum(1), step, max_step, strategy.schedule)
            ranking = torch.where(still_masked, proposal_scores, scores)
            lowest = self._lowest(ranking, decodable, num_masked)
            to_mask, to_fill = lowest & ~still_masked, still_masked & ~lowest
        elif strategy.kind == "ancestral":
            unmask_prob = 1.0 / (max_step - step + 1) if step < max_step else 1.0
            draw = torch.rand(tokens.shape, generator=generator, device=tokens.device)
            to_mask, to_fill = torch.zeros_like(decodable), still_masked & (draw < unmask_prob)
        else:
            confident = proposal_confidence >= math.log(strategy.threshold)
            best = proposal_confidence.masked_fill(~still_masked, float("-inf")).argmax(1, keepdim=True)
            most_confident = torch.zeros_like(still_masked).scatter(1, best, True)
            to_fill = still_masked & (confident | most_confident | (step >= max_step))
            to_mask = torch.zeros_like(decodable)
        tokens = torch.where(to_fill, proposal_tokens, tokens).masked_fill(to_mask, self.mask_idx)
        scores = torch.where(to_fill, proposal_scores, scores).masked_fill(
            to_mask, float("-inf")
        )
        return tokens, scores

    @staticmethod
    def _lowest(ranking: Tensor, decodable: Tensor, count: Tensor) -> Tensor:
        """The ``count`` (B,) lowest-ranked decodable positions of each row: bool (B, L).

        Ties go to the leftmost position (stable sort), so exactly ``count`` are chosen.
        """
        ranking = ranking.float().masked_fill(~decodable, float("inf"))
        rank = ranking.argsort(dim=1, stable=True).argsort(dim=1)
        return (rank < count.unsqueeze(1)) & decodable

    def _reparam_selection(self, tokens, scores, decodable, still_masked, proposal_tokens,
                           proposal_scores, proposal_confidence, step, max_step, strategy,
                           generator):
        """RDM's reparameterised step: (to_mask, to_fill), bool (B, L) each."""
        rate = self.schedule_rate(step, max_step, strategy.schedule)
        num_masked = self.num_masked_after(decodable.sum(1), step, max_step, strategy.schedule)
        ranking = proposal_confidence.float()
        if strategy.gumbel_scale > 0:
            uniform = torch.rand(ranking.shape, generator=generator, device=ranking.device)
            gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
            ranking = ranking + strategy.gumbel_scale * rate * gumbel
        lowest = self._lowest(ranking, decodable, num_masked)
        if strategy.conditional_remask:
            remask_committed = lowest & proposal_tokens.eq(tokens) & (proposal_scores < scores)
        else:
            remask_committed = lowest
        to_mask = (~still_masked & decodable & remask_committed) | (still_masked & lowest)
        return to_mask, still_masked & ~lowest
