"""The plugin's decoding options: one dataclass, mixed into the task's config
(so each is a flag of fairseq-train / -generate / -interactive), validated in one place.

fairseq's own generation options that the generator reads (``--iter-decode-max-iter``
and the others in ``FAIRSEQ_GENERATION_OPTIONS``) stay fairseq's flags; the task maps
them to the generator's arguments once (``generator_arguments``).
"""

from dataclasses import dataclass, field, fields
from enum import Enum

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.utils import safe_getattr

from diffusion_plugin.option_ranges import check_ranges
from diffusion_plugin.strategies import CONFIDENCES, ReverseStrategy, strategy_help

LENGTH_BEAM_MODES = ("topk", "window")
CANDIDATE_SELECTIONS = ("score", "joint", "mbr-bleu", "mbr-chrf")

FAIRSEQ_GENERATION_OPTIONS = {
    "iter_decode_max_iter": "max_iter",
    "iter_decode_with_beam": "beam_size",
    "iter_decode_force_max_iter": "force_max_iter",
    "retain_iter_history": "retain_history",
    "temperature": "temperature",
    "sampling": "sampling",
    "post_process": "post_process",
}
"""fairseq's generation option -> the DiffusionGenerator argument it sets."""


@dataclass
class DecodingConfig(FairseqDataclass):
    decoding_strategy: str = field(
        default="reparam-uncond-deterministic-cosine",
        metadata={"help": "reverse process: a registered strategy (the help lists them)"},
    )
    unmasking_confidence: ChoiceEnum(CONFIDENCES) = field(
        default="prob",
        metadata={
            "help": "what ranks positions for the strategies ranked by confidence (marked "
            "in --decoding-strategy's help): the token's probability, the margin to the "
            "second token, or 1 - normalised entropy"
        },
    )
    guidance_scale: float = field(
        default=0.0,
        metadata={
            "help": "classifier-free guidance w: logits u + (1 + w)(c - u), u computed "
            "with the prompt masked; 0 turns it off"
        },
    )
    length_beam_mode: ChoiceEnum(LENGTH_BEAM_MODES) = field(
        default="topk",
        metadata={
            "help": "candidate lengths of --iter-decode-with-beam B: the length head's "
            "top-B, or a window of B lengths around its argmax (CMLM)"
        },
    )
    temperature_scales_scores: bool = field(
        default=False,
        metadata={
            "help": "also divide the logits by --temperature for the log-probs that rank "
            "positions (re-masking) and candidates (mean score); by default --temperature "
            "only changes what --sampling draws from, as in the official code"
        },
    )
    oracle_length: bool = field(
        default=False, metadata={"help": "decode with the reference target length"}
    )
    samples_per_length: int = field(
        default=1,
        metadata={
            "help": "canvases per candidate length (they differ under --sampling or a "
            "stochastic strategy); all are ranked by --candidate-selection"
        },
    )
    candidate_selection: ChoiceEnum(CANDIDATE_SELECTIONS) = field(
        default="score",
        metadata={
            "help": "pick among length candidates by mean token log-prob (the paper's), by "
            "the joint log-prob of tokens and length per factor, (sum log p_i + log P(L)) "
            "/ (L + 1) (joint), or by minimum Bayes risk with sentence sacreBLEU or chrF "
            "between candidates"
        },
    )
    collapse_repeats: bool = field(
        default=False,
        metadata={
            "help": "remove adjacent repeated tokens from each output (a a b -> a b) after "
            "the candidates are ranked; off in the paper"
        },
    )
    prompt_cache: bool = field(
        default=False,
        metadata={
            "help": "run only the target through the layers, reusing the prompt's cached "
            "keys/values: exact for models trained with --prompt-attention prefix, "
            "approximate (Fast-dLLM) otherwise, refreshed by --prompt-cache-refresh"
        },
    )
    prompt_cache_refresh: int = field(
        default=0,
        metadata={
            "help": "with --prompt-cache, recompute the cache with a full pass every N "
            "steps (0: only at the first step of a full-attention model)"
        },
    )

    def _get_help(self, attribute_name):
        """A field's help; --decoding-strategy's lists the strategies registered now."""
        if attribute_name == "decoding_strategy":
            return f"reverse process: {strategy_help()}"
        return super()._get_help(attribute_name)

    def validate(self) -> ReverseStrategy:
        """The parsed --decoding-strategy; a ValueError naming the flag of a bad option."""
        strategy = ReverseStrategy.parse(self.decoding_strategy)
        check_ranges(self)
        checks = [
            (str(self.unmasking_confidence) in CONFIDENCES,
             f"--unmasking-confidence {self.unmasking_confidence!r}: choose from {CONFIDENCES}"),
            (strategy.ranks_by_confidence or self.unmasking_confidence == "prob",
             f"--decoding-strategy {self.decoding_strategy} does not rank by confidence; drop "
             f"--unmasking-confidence {self.unmasking_confidence}"),
            (str(self.length_beam_mode) in LENGTH_BEAM_MODES,
             f"--length-beam-mode {self.length_beam_mode!r}: choose from {LENGTH_BEAM_MODES}"),
            (str(self.candidate_selection) in CANDIDATE_SELECTIONS,
             f"--candidate-selection {self.candidate_selection!r}: choose from {CANDIDATE_SELECTIONS}"),
            (not (self.prompt_cache and self.guidance_scale > 0),
             "--prompt-cache does not combine with --guidance-scale (the unconditional pass "
             "masks the prompt); drop one of them"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return strategy


def decoding_config(task_cfg, args=None) -> DecodingConfig:
    """The DecodingConfig of the task's options, each overridden by ``args`` where it
    has one (the hub interface's keywords, fairseq-generate's cfg.generation)."""
    values = {}
    for config_field in fields(DecodingConfig):
        if config_field.name == "_name":
            continue
        value = safe_getattr(task_cfg, config_field.name, config_field.default)
        value = safe_getattr(args, config_field.name, value) if args is not None else value
        values[config_field.name] = value.value if isinstance(value, Enum) else value
    return DecodingConfig(**values)


def generator_arguments(args) -> dict:
    """DiffusionGenerator keywords from the fairseq generation options ``args`` has."""
    return {
        argument: safe_getattr(args, option)
        for option, argument in FAIRSEQ_GENERATION_OPTIONS.items()
        if safe_getattr(args, option) is not None
    }


HUB_GENERATE_KEYWORDS = ("skip_invalid_size_inputs", "inference_step_args", "prefix_allowed_tokens_fn")
"""Keywords of fairseq's ``GeneratorHubInterface.generate`` besides the decoding options."""


def decoding_option_names() -> list:
    """The options a generator reads: DecodingConfig's and fairseq's it maps
    (``--eval-bleu-args`` keys, the hub interface's ``generate`` keywords)."""
    return sorted({f.name for f in fields(DecodingConfig) if f.name != "_name"} | set(FAIRSEQ_GENERATION_OPTIONS))


def check_option_names(names, origin: str, extra=()) -> None:
    """A ValueError naming ``origin`` and the valid names if one of ``names`` is unknown."""
    known = set(decoding_option_names()) | set(extra)
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(
            f"{origin}: unknown option(s) {', '.join(unknown)}; the decoding options are "
            f"{', '.join(sorted(known))}"
        )
