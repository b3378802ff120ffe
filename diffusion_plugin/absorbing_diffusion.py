"""The forward process of absorbing-state (``<mask>``) diffusion over target tokens.

A target token is replaced by ``<mask>`` with probability ``rate(t, T)`` of the noise
schedule (``schedules.py``; the paper's is linear, ``t/T``), ``t ~ U{1..T}``; RDM's
*coupled* draw gives two nested noised copies per example (Zheng et al., 2023, "A
Reparameterized Discrete Diffusion Model for Text Generation"; Ye et al., 2023, §3).
The reverse process (the strategies that commit and re-mask tokens) is ``strategies.py``'s;
both read the same schedule table.
"""

from typing import Tuple

import torch
from torch import Tensor

from diffusion_plugin.schedules import schedule_rate

DEFAULT_NUM_STEPS = 50
"""T unless --num-diffusion-steps says otherwise."""
WEIGHTINGS = ("linear", "constant", "elbo")


class AbsorbingDiffusion:
    """Masking diffusion with ``num_steps`` (T) steps, absorbing token ``mask_idx`` and
    noise schedule ``schedule`` (a name of ``schedules.NOISE_SCHEDULES``)."""

    def __init__(self, mask_idx: int, num_steps: int = DEFAULT_NUM_STEPS, schedule: str = "linear"):
        if num_steps < 1:
            raise ValueError(f"--num-diffusion-steps must be >= 1, got {num_steps}")
        self.mask_idx = mask_idx
        self.num_steps = num_steps
        self.schedule = schedule
        self.rate = schedule_rate(schedule)

    def mask_probability(self, t: Tensor) -> Tensor:
        """``rate(t, T)`` of times t (LongTensor (B,)): FloatTensor (B,), computed in
        float64 (for linear exactly the float32 ``t / T``)."""
        return self.rate(t.double(), self.num_steps).float()

    def sample_time(self, batch_size: int, device=None) -> Tensor:
        """Draw ``t ~ U{1..T}``: LongTensor (batch_size,)."""
        return torch.randint(1, self.num_steps + 1, (batch_size,), device=device)

    def q_sample(self, x0: Tensor, maskable: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        """Mask each maskable token of row b independently with probability rate(t_b, T).

        x0, maskable: (B, L); t: (B,). Returns (x_t (B, L), masked (B, L) bool).
        """
        ratio = self.mask_probability(t).unsqueeze(1)
        masked = (torch.rand(x0.shape, device=x0.device) < ratio) & maskable
        return x0.masked_fill(masked, self.mask_idx), masked

    def q_sample_coupled(self, x0: Tensor, maskable: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """RDM's coupled draw: two nested noised copies of every row.

        With ``t_a >= t_b`` drawn from two uniform times, ``x_{t_a} ~ q(. | x_0)`` and
        ``x_{t_b} ~ q(. | x_{t_a}, x_0)`` (each masked token of ``x_{t_a}`` stays masked
        with probability ``rate(t_b) / rate(t_a)``, ``t_b / t_a`` for linear); when
        ``t_a == t_b`` the second copy is an independent draw. x0, maskable: (B, L).
        Returns (x_t (2B, L), masked (2B, L), t (2B,)), rows ``[:B]`` at ``t_a`` and rows
        ``[B:]`` at ``t_b``.
        """
        batch_size = x0.size(0)
        pair = self.sample_time(2 * batch_size, device=x0.device).view(2, batch_size)
        t_a, t_b = pair.max(dim=0).values, pair.min(dim=0).values
        _, masked_a = self.q_sample(x0, maskable, t_a)
        rate_a, rate_b = self.rate(t_a.double(), self.num_steps), self.rate(t_b.double(), self.num_steps)
        keep_prob = (rate_b / rate_a).float().unsqueeze(1)
        masked_b = masked_a & (torch.rand(x0.shape, device=x0.device) < keep_prob)
        _, independent_b = self.q_sample(x0, maskable, t_b)
        masked_b = torch.where((t_a == t_b).unsqueeze(1), independent_b, masked_b)
        masked = torch.cat([masked_a, masked_b], dim=0)
        x_t = x0.repeat(2, 1).masked_fill(masked, self.mask_idx)
        return x_t, masked, torch.cat([t_a, t_b], dim=0)

    def loss_weight(self, t: Tensor, weighting: str) -> Tensor:
        """Per-row weight of the reweighted objective: FloatTensor like ``t``.

        ``linear``: T - t + 1 (RDM/Diffusion-LLM default, T * lambda_t with
        lambda_t = 1 - (t - 1) / T, a weighting of the time index whatever the schedule);
        ``constant``: T; ``elbo``: the ELBO's weight of the schedule times the importance
        weight T of uniform time sampling, ``T (rate(t) - rate(t - 1)) / rate(t)`` (the
        share of the masked tokens of x_t that the step t -> t-1 reveals), which is
        ``T / t`` for linear (RDM's ``reciprocal``) and, for cosine,
        ``T (sin(pi t / 2T) - sin(pi (t - 1) / 2T)) / sin(pi t / 2T)``.
        """
        if weighting == "linear":
            return self.num_steps - t.float() + 1
        if weighting == "constant":
            return torch.full_like(t, float(self.num_steps), dtype=torch.float)
        if weighting == "elbo":
            t = t.double()
            rate = self.rate(t, self.num_steps)
            return (self.num_steps * (rate - self.rate(t - 1, self.num_steps)) / rate).float()
        raise ValueError(f"unknown weighting {weighting!r}; choose from {WEIGHTINGS}")
