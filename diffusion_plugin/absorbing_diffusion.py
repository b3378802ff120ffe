"""Absorbing-state (``<mask>``) discrete diffusion over target tokens.

One object holds both directions of the process so that the criterion (forward
noising) and the generator (reverse denoising) cannot drift apart:

* forward: a target token is replaced by ``<mask>`` with probability ``t/T``,
  ``t ~ U{1..T}``; RDM's *coupled* draw gives two nested noised copies per
  example (Zheng et al., 2023, "A Reparameterized Discrete Diffusion Model for
  Text Generation"; Ye et al., 2023, §3).
* reverse: RDM's reparameterised sampler. Every step proposes a token for each
  target position, then keeps ``floor(N * schedule(s / K))`` of the least
  confident positions masked (re-masking committed tokens in the
  ``uncond`` variant).
"""

import math
import re
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

WEIGHTINGS = ("linear", "constant", "elbo")
STRATEGY_PATTERN = re.compile(
    r"^reparam-(?P<remask>cond|uncond)-"
    r"(?P<selection>deterministic|stochastic(?P<noise>[0-9]*\.?[0-9]+))-"
    r"(?P<schedule>cosine|linear)$"
)


@dataclass(frozen=True)
class ReverseStrategy:
    """A parsed ``reparam-{cond,uncond}-{deterministic,stochastic<c>}-{cosine,linear}``."""

    conditional_remask: bool
    gumbel_scale: float
    schedule: str

    @classmethod
    def parse(cls, name: str) -> "ReverseStrategy":
        match = STRATEGY_PATTERN.match(name)
        if match is None:
            raise ValueError(
                f"--decoding-strategy {name!r} is not understood; expected "
                "reparam-{cond,uncond}-{deterministic,stochastic<c>}-{cosine,linear}, "
                "e.g. reparam-uncond-deterministic-cosine"
            )
        return cls(
            conditional_remask=match["remask"] == "cond",
            gumbel_scale=float(match["noise"]) if match["noise"] else 0.0,
            schedule=match["schedule"],
        )


class AbsorbingDiffusion:
    """Masking diffusion with ``num_steps`` (T) steps and absorbing token ``mask_idx``."""

    def __init__(self, mask_idx: int, num_steps: int = 50):
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
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[Tensor, Tensor]:
        """One step of RDM's reparameterised reverse process.

        tokens (B, L): the canvas; scores (B, L): log-prob of each committed token
        (-inf while masked); decodable (B, L): target content positions;
        proposal_tokens / proposal_scores (B, L): the model's token and its log-prob
        at every decodable position. Returns the new (tokens, scores).
        """
        still_masked = tokens.eq(self.mask_idx) & decodable
        rate = self.schedule_rate(step, max_step, strategy.schedule)
        num_masked = self.num_masked_after(decodable.sum(1), step, max_step, strategy.schedule)
        ranking = proposal_scores.float()
        if strategy.gumbel_scale > 0:
            uniform = torch.rand(ranking.shape, generator=generator, device=ranking.device)
            gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
            ranking = ranking + strategy.gumbel_scale * rate * gumbel
        ranking = ranking.masked_fill(~decodable, float("inf"))
        rank = ranking.argsort(dim=1, stable=True).argsort(dim=1)
        lowest = (rank < num_masked.unsqueeze(1)) & decodable

        if strategy.conditional_remask:
            remask_committed = (
                lowest & proposal_tokens.eq(tokens) & (proposal_scores < scores)
            )
        else:
            remask_committed = lowest
        to_mask = (~still_masked & decodable & remask_committed) | (still_masked & lowest)
        to_fill = still_masked & ~lowest

        tokens = torch.where(to_fill, proposal_tokens, tokens).masked_fill(to_mask, self.mask_idx)
        scores = torch.where(to_fill, proposal_scores, scores).masked_fill(
            to_mask, float("-inf")
        )
        return tokens, scores
