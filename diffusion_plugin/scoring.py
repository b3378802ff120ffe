"""The plugin's metrics behind fairseq's interfaces.

- ``fairseq-generate --scoring rouge``: ROUGE-1/2/L F1 of the detokenized hypotheses
  (``D-`` lines) against the references, registered in fairseq's scorer registry
  (as ``fairseq/scoring/chrf.py``); ``--rouge-tokenizer`` picks the words.
- ``fairseq-generate --scoring sacrebleu``: fairseq's scorer, which tokenizes with its own
  copy of sacreBLEU's tokenizers and scores with ``tokenize="none"``, so its line carries
  no signature; :class:`SignedSacrebleuScorer` scores the detokenized text with
  ``sacrebleu.BLEU`` itself (the same tokenizer, hence the same score) and prints
  sacreBLEU's signature, as the ``sacrebleu`` command does. It replaces fairseq's entry
  under the same name and options.
- :data:`VALIDATION_METRICS`: the metrics of decoded validation text that
  ``prompted_translation`` logs (``--eval-metrics``, ``--eval-bleu``, ``--eval-rouge``),
  one entry each.

The scores themselves are :mod:`diffusion_plugin.metrics`'.
"""

import functools
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple

import sacrebleu
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.scoring import SCORER_REGISTRY, BaseScorer, register_scorer
from fairseq.scoring.bleu import SacrebleuScorer
from fairseq.tasks.translation import EVAL_BLEU_ORDER

from diffusion_plugin.metrics import ROUGE_TOKENIZERS, ROUGE_TYPES, bleu_statistics, rouge, rouge_sums


@dataclass
class RougeScorerConfig(FairseqDataclass):
    """Options of ``--scoring rouge``."""

    rouge_tokenizer: ChoiceEnum(ROUGE_TOKENIZERS) = field(
        default="py-rouge",
        metadata={
            "help": "words --scoring rouge compares: py-rouge's (lower-cased, stemmed; the "
            "paper's Gigaword scorer) or rouge-score's own (unstemmed)"
        },
    )


@register_scorer("rouge", dataclass=RougeScorerConfig)
class RougeScorer(BaseScorer):
    """Mean ROUGE-1/2/L F1 over examples, in percent (:func:`metrics.rouge`); fairseq-generate
    adds each reference and detokenized hypothesis with :meth:`add_string`."""

    def scores(self) -> Dict[str, float]:
        """ROUGE-1/2/L F1 in percent: {rouge1, rouge2, rougeL}."""
        return rouge(self.pred, self.ref, str(self.cfg.rouge_tokenizer))

    def score(self) -> float:
        """ROUGE-L F1 in percent."""
        return self.scores()["rougeL"]

    def result_string(self) -> str:
        scores = self.scores()
        return (
            f"ROUGE-1 = {scores['rouge1']:.2f}, ROUGE-2 = {scores['rouge2']:.2f}, "
            f"ROUGE-L = {scores['rougeL']:.2f} (F1 %, {self.cfg.rouge_tokenizer} words, "
            f"{len(self.pred)} examples)"
        )


def plugin_scorers():
    """[(name, config dataclass)] of the scorers the plugin registers, by name."""
    from fairseq.registry import REGISTRIES
    from fairseq.scoring import SCORER_REGISTRY

    configs = REGISTRIES["scoring"]["dataclass_registry"]
    return [(name, configs[name]) for name, cls in sorted(SCORER_REGISTRY.items())
            if cls.__module__.startswith(__name__.rpartition(".")[0] + ".")]


@dataclass(frozen=True)
class ValidationMetric:
    """A metric of decoded validation text. ``statistics(hyps, refs, cfg)`` gives a
    batch's numbers that add up over batches and workers; ``values(sums)`` gives the
    ``logged`` metrics (rounded to 2 places) from their sums. ``flag``: a boolean task
    option that also selects the metric (besides ``--eval-metrics``)."""

    logged: Tuple[str, ...]
    statistics: Callable[[Sequence[str], Sequence[str], object], Dict[str, float]]
    values: Callable[[Dict[str, float]], Dict[str, float]]
    flag: Optional[str] = None


def _bleu_statistics(hyps, refs, cfg):
    tokenize = "none" if cfg.eval_tokenized_bleu else str(cfg.eval_bleu_tokenize)
    bleu = bleu_statistics(hyps, refs, tokenize)
    stats = {"sys_len": bleu.sys_len, "ref_len": bleu.ref_len}
    for i in range(EVAL_BLEU_ORDER):
        stats[f"counts_{i}"] = bleu.counts[i]
        stats[f"totals_{i}"] = bleu.totals[i]
    return stats


def _bleu_values(sums):
    """fairseq's --eval-bleu: corpus sacreBLEU (smooth exp) from the summed n-gram counts."""
    from sacrebleu.metrics import BLEU

    if max(sums[f"totals_{i}"] for i in range(EVAL_BLEU_ORDER)) == 0:
        return {"bleu": 0.0}
    bleu = BLEU.compute_bleu(
        correct=[sums[f"counts_{i}"] for i in range(EVAL_BLEU_ORDER)],
        total=[sums[f"totals_{i}"] for i in range(EVAL_BLEU_ORDER)],
        sys_len=int(sums["sys_len"]),
        ref_len=int(sums["ref_len"]),
        smooth_method="exp",
    )
    return {"bleu": bleu.score}


def _rouge_statistics(hyps, refs, cfg):
    return dict(rouge_sums(hyps, refs, str(cfg.eval_rouge_tokenizer)), count=len(hyps))


def _rouge_values(sums):
    return {key: 100 * sums[key] / sums["count"] for key in ROUGE_TYPES}


# name -> metric; --eval-metrics NAME,... selects them, as does each one's flag
VALIDATION_METRICS: Dict[str, ValidationMetric] = {
    "bleu": ValidationMetric(("bleu",), _bleu_statistics, _bleu_values, flag="eval_bleu"),
    "rouge": ValidationMetric(ROUGE_TYPES, _rouge_statistics, _rouge_values, flag="eval_rouge"),
}


def selected_metrics(cfg):
    """The names of the validation metrics ``cfg`` asks for, in table order; an unknown
    name in --eval-metrics is an error naming the known ones."""
    names = [name.strip() for name in (cfg.eval_metrics or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in VALIDATION_METRICS]
    if unknown:
        raise ValueError(
            f"--eval-metrics {cfg.eval_metrics!r}: unknown {', '.join(unknown)}; choose from "
            f"{', '.join(VALIDATION_METRICS)}"
        )
    return [
        name for name, metric in VALIDATION_METRICS.items()
        if name in names or (metric.flag is not None and getattr(cfg, metric.flag, False))
    ]


def statistic_key(name, key):
    """The logging-output key of statistic ``key`` of validation metric ``name`` (hidden
    from fairseq's log by the leading underscore)."""
    return f"_{name}/{key}"


def log_validation_metrics(names, logging_outputs):
    """Sum each metric's statistics (:func:`statistic_key`) over ``logging_outputs`` into
    fairseq's meters and log its values from them (nothing for a metric without any)."""
    from fairseq import metrics, utils

    for name in names:
        prefix, metric = statistic_key(name, ""), VALIDATION_METRICS[name]
        keys = sorted({key[len(prefix):] for log in logging_outputs for key in log if key.startswith(prefix)})
        if not keys:
            continue
        for key in keys:
            metrics.log_scalar(prefix + key, utils.item(sum(log.get(prefix + key, 0) for log in logging_outputs)))

        def derived(meters, value_name, metric=metric, keys=keys, prefix=prefix):
            return round(metric.values({key: meters[prefix + key].sum for key in keys})[value_name], 2)

        for value_name in metric.logged:
            metrics.log_derived(value_name, functools.partial(derived, value_name=value_name))


class SignedSacrebleuScorer(SacrebleuScorer):
    """fairseq's sacrebleu scorer; its result string holds sacreBLEU's signature
    (fairseq's own, without one, for --sacrebleu-char-level, which sacreBLEU lacks)."""

    def add_string(self, ref, pred):
        if self.cfg.sacrebleu_char_level:
            return super().add_string(ref, pred)
        self.ref.append(ref)
        self.pred.append(pred)

    def _metric(self):
        return sacrebleu.BLEU(tokenize=self.cfg.sacrebleu_tokenizer, lowercase=self.cfg.sacrebleu_lowercase)

    def _score(self, order=4):
        if order != 4 or self.cfg.sacrebleu_char_level:
            return super()._score(order)
        return self._metric().corpus_score(self.pred, [self.ref])

    def result_string(self, order=4):
        if self.cfg.sacrebleu_char_level:
            return super().result_string(order)
        metric = self._metric()
        return metric.corpus_score(self.pred, [self.ref]).format(signature=str(metric.get_signature()))


SCORER_REGISTRY["sacrebleu"] = SignedSacrebleuScorer

