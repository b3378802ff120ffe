"""The range of every numeric option of the plugin (and of fairseq's generation options
its generator reads), checked in one place: ``check_ranges``."""

import math
from dataclasses import dataclass

from fairseq.utils import safe_getattr


@dataclass(frozen=True)
class Range:
    """Values ``low`` .. ``high``; an open end excludes its value."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open or self.high == math.inf else value <= self.high
        return above and below

    def __str__(self) -> str:
        high = "inf)" if self.high == math.inf else f"{self.high:g}{')' if self.high_open else ']'}"
        return f"{'(' if self.low_open else '['}{self.low:g}, {high}"


PROBABILITY = Range(0, 1, high_open=True)
POSITIVE = Range(1)
NON_NEGATIVE = Range(0)

OPTION_RANGES = {
    # task
    "max_positions": Range(2),
    "num_diffusion_steps": POSITIVE,
    # decoding (DecodingConfig) and fairseq's generation options the generator reads
    "guidance_scale": NON_NEGATIVE,
    "samples_per_length": POSITIVE,
    "prompt_cache_refresh": NON_NEGATIVE,
    "iter_decode_max_iter": POSITIVE,
    "iter_decode_with_beam": POSITIVE,
    "temperature": Range(0, low_open=True),
    # criteria
    "label_smoothing": PROBABILITY,
    "length_loss_factor": NON_NEGATIVE,
    # model
    "encoder_layers": POSITIVE,
    "encoder_embed_dim": POSITIVE,
    "encoder_ffn_embed_dim": POSITIVE,
    "encoder_attention_heads": POSITIVE,
    "dropout": PROBABILITY,
    "attention_dropout": PROBABILITY,
    "activation_dropout": PROBABILITY,
    "encoder_layerdrop": PROBABILITY,
    "length_classes": POSITIVE,
    "min_params_to_wrap": NON_NEGATIVE,
}
"""option (its config field name) -> the values it accepts."""


def check_ranges(options) -> None:
    """A ValueError naming the flag of the first option of ``options`` (a config, a
    Namespace or a dict of field name -> value) outside its OPTION_RANGES range."""
    get = options.get if isinstance(options, dict) else lambda name: safe_getattr(options, name)
    for name, allowed in OPTION_RANGES.items():
        value = get(name)
        if value is not None and not isinstance(value, bool) and value not in allowed:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} {value} is out of range: give a value in {allowed}")
