"""Scores of generated text: the instruction evaluation (method spec §5.4) and ROUGE.

Used by ``scripts/evaluate_instruct.py``, ``scripts/score_rouge.py`` and the
``--eval-rouge`` validation of ``prompted_translation``. Lower-casing is an
explicit argument everywhere (the paper's scorer lower-cases silently, spec §8).
"""

import re
from decimal import Decimal
from typing import Dict, List, Optional, Sequence

import sacrebleu

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# an integer with optional thousands commas and decimals; the paper's regex is (\d+(,\d+)*)
NUMBER = re.compile(r"-?\d+(?:,\d+)*(?:\.\d+)?")


def normalize(text: str, lowercase: bool) -> str:
    """``text`` stripped, and lower-cased if asked."""
    text = text.strip()
    return text.lower() if lowercase else text


def exact_matches(hyps: Sequence[str], refs: Sequence[str], lowercase: bool) -> List[bool]:
    """Per example: does the whole (normalized) hypothesis equal the reference?"""
    _check_pairs(hyps, refs)
    return [normalize(h, lowercase) == normalize(r, lowercase) for h, r in zip(hyps, refs)]


def last_number(text: str) -> Optional[Decimal]:
    """The last number written in ``text``, thousands commas removed; None if none."""
    found = NUMBER.findall(text)
    return Decimal(found[-1].replace(",", "")) if found else None


def number_matches(hyps: Sequence[str], refs: Sequence[str]) -> List[bool]:
    """Per example: is the last number of the hypothesis that of the reference?"""
    _check_pairs(hyps, refs)
    matches = []
    for hyp, ref in zip(hyps, refs):
        gold = last_number(ref)
        if gold is None:
            raise ValueError(f"reference {ref!r} holds no number to compare with")
        matches.append(last_number(hyp) == gold)
    return matches


def grouped_accuracy(correct: Sequence[bool], groups: Sequence[str]) -> Dict:
    """Accuracy in percent: ``micro`` over all examples, ``macro`` over groups (each
    group's accuracy weighted equally) and ``groups`` {name: {accuracy, examples}}."""
    if len(correct) != len(groups) or not correct:
        raise ValueError(f"need one group per example, got {len(correct)} and {len(groups)}")
    per_group = {}
    for ok, group in zip(correct, groups):
        per_group.setdefault(group, []).append(bool(ok))
    scores = {g: {"accuracy": 100.0 * sum(v) / len(v), "examples": len(v)} for g, v in per_group.items()}
    return {
        "micro": 100.0 * sum(map(bool, correct)) / len(correct),
        "macro": sum(s["accuracy"] for s in scores.values()) / len(scores),
        "groups": dict(sorted(scores.items())),
    }


def bleu(hyps: Sequence[str], refs: Sequence[str], tokenize: str, lowercase: bool) -> Dict:
    """Corpus sacreBLEU: ``score`` and sacreBLEU's ``signature``."""
    _check_pairs(hyps, refs)
    metric = sacrebleu.BLEU(tokenize=tokenize, lowercase=lowercase)
    return {"score": metric.corpus_score(list(hyps), [list(refs)]).score,
            "signature": str(metric.get_signature())}


def rouge_sums(hyps: Sequence[str], refs: Sequence[str]) -> Dict[str, float]:
    """Sums over examples of ROUGE-1/2/L F1 (fractions, rouge-score's tokenizer, which
    lower-cases and keeps [a-z0-9] words); an empty hypothesis scores 0."""
    from rouge_score import rouge_scorer

    _check_pairs(hyps, refs)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    sums = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hyps, refs):
        scores = scorer.score(ref, hyp)
        for key in ROUGE_TYPES:
            sums[key] += scores[key].fmeasure
    return sums


def rouge(hyps: Sequence[str], refs: Sequence[str]) -> Dict[str, float]:
    """Mean ROUGE-1/2/L F1 over examples, in percent."""
    if not hyps:
        raise ValueError("no hypotheses to score")
    return {key: 100.0 * total / len(hyps) for key, total in rouge_sums(hyps, refs).items()}


def _check_pairs(hyps, refs):
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
