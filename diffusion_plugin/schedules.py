"""The noise schedules: the fraction of target tokens that are ``<mask>`` at time t of T.

One table (``NOISE_SCHEDULES``) read by both directions: the forward process masks each
target token with probability ``rate(t, T)`` (``AbsorbingDiffusion``, ``--noise-schedule``),
its ``elbo`` loss weight is the schedule's, and a reverse step ``s`` of ``K`` leaves
``floor(N * rate(K - s, K))`` of a canvas's N target positions masked (the schedule
suffix of ``--decoding-strategy``, e.g. ``reparam-uncond-deterministic-cosine``).

A schedule is a function ``rate(t, T)`` of a time ``t`` in ``[0, T]`` (a Python number,
or a float64 tensor of times) with ``rate(0, T) = 0``, ``rate(T, T) = 1`` and non-decreasing
in between. Adding one is one decorated function here (or anywhere before it is named).
"""

import math
from typing import Callable, Dict, Union

import torch
from torch import Tensor

Time = Union[int, float, Tensor]
NOISE_SCHEDULES: Dict[str, Callable[[Time, int], Time]] = {}
"""name -> rate(t, T): the masking probability at time t of T."""


def register_noise_schedule(name: str):
    """Decorator: register ``rate(t, T)`` as noise schedule ``name``."""

    def register(rate):
        if name in NOISE_SCHEDULES:
            raise ValueError(f"noise schedule {name!r} is already registered")
        if "-" in name:
            raise ValueError(f"noise schedule {name!r}: a name without '-' (it ends strategy names)")
        NOISE_SCHEDULES[name] = rate
        return rate

    return register


@register_noise_schedule("linear")
def linear(t: Time, T: int) -> Time:
    """``t / T`` (the paper's forward process; a reverse step s of K leaves ``1 - s / K``),
    computed from the elapsed time ``T - t`` as the reverse step counts it."""
    return 1 - (T - t) / T


@register_noise_schedule("cosine")
def cosine(t: Time, T: int) -> Time:
    """``sin(pi t / 2T) = cos(pi (T - t) / 2T)`` (MaskGIT's cosine: a reverse step s of K
    leaves ``cos(pi s / 2K)`` masked). Slower than linear to mask at small t: a row at
    t = T/2 is 71 % masked, not 50 %."""
    angle = math.pi * (T - t) / (2 * T)
    return torch.cos(angle) if torch.is_tensor(angle) else math.cos(angle)


def schedule_rate(name: str) -> Callable[[Time, int], Time]:
    """The rate function of schedule ``name``; a ValueError listing the registered ones."""
    if name not in NOISE_SCHEDULES:
        raise ValueError(f"--noise-schedule {name!r} is not registered; choose from {sorted(NOISE_SCHEDULES)}")
    return NOISE_SCHEDULES[name]


def masked_fraction_after(step: int, max_step: int, schedule: str) -> float:
    """Fraction of target positions left masked after reverse step ``step`` (1-based) of
    ``max_step``: ``rate(max_step - step, max_step)``, zero from ``step = max_step`` on."""
    if step >= max_step:
        return 0.0
    return float(schedule_rate(schedule)(max_step - step, max_step))


def num_masked_after(num_tokens: Tensor, step: int, max_step: int, schedule: str) -> Tensor:
    """``floor(N * masked_fraction_after(step))`` for each row; num_tokens: LongTensor (B,)."""
    rate = masked_fraction_after(step, max_step, schedule)
    return (num_tokens.double() * rate).floor().long()
