"""Scores of generated text: the instruction evaluation's rules (docs/METHOD.md §7), BLEU
and ROUGE.

Used by ``scripts/evaluate_instruct.py`` (:func:`score_instruct_set` with
:class:`InstructRules`), fairseq-generate's ``--scoring rouge`` and the validation
metrics of ``prompted_translation`` (``diffusion_plugin/scoring.py``). The defaults
are the paper's scorer (its code's ``scripts/metric_instruct.py``, ``src/dd_generator.py``):
text decoded by the tokenizer (:func:`decoded_text`), lower-cased; MGSM's last integer;
ROUGE as py-rouge computes it. Each other rule is a named option.
"""

import dataclasses
import functools
import importlib.metadata
import re
from decimal import Decimal
from typing import Dict, List, Optional, Sequence

import sacrebleu

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
ROUGE_TOKENIZERS = ("py-rouge", "rouge-score")
MGSM_RULES = ("integer", "decimal")
NUMBER_PATTERNS = {
    "integer": re.compile(r"\d+(?:,\d+)*"),  # the paper's (\d+(,\d+)*), compared as an integer
    "decimal": re.compile(r"-?\d+(?:,\d+)*(?:\.\d+)?"),  # signed, with decimals
}
# transformers' PreTrainedTokenizerBase.clean_up_tokenization, which the paper's
# tokenizer.batch_decode applies by default (clean_up_tokenization_spaces=True)
CLEAN_UP_TOKENIZATION = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
    (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)


def clean_up_tokenization(text: str) -> str:
    """``text`` with the spaces before punctuation and English clitics removed, as
    transformers' decode does (``it 's .`` -> ``it's.``)."""
    for old, new in CLEAN_UP_TOKENIZATION:
        text = text.replace(old, new)
    return text


def decoded_text(text: str, lowercase: bool = True, clean_up: bool = True) -> str:
    """``text`` as the paper's decode leaves it: tokenization spaces cleaned up
    (``clean_up``), lower-cased (``lowercase``), stripped."""
    if clean_up:
        text = clean_up_tokenization(text)
    text = text.strip()
    return text.lower() if lowercase else text


def normalize(text: str, lowercase: bool) -> str:
    """``text`` stripped, and lower-cased if asked."""
    text = text.strip()
    return text.lower() if lowercase else text


def exact_matches(hyps: Sequence[str], refs: Sequence[str], lowercase: bool) -> List[bool]:
    """Per example: does the whole (normalized) hypothesis equal the reference?"""
    _check_pairs(hyps, refs)
    return [normalize(h, lowercase) == normalize(r, lowercase) for h, r in zip(hyps, refs)]


def last_number(text: str, rule: str = "integer") -> Optional[Decimal]:
    """The last number written in ``text``, thousands commas removed; None if none.

    ``integer`` (the paper's): the last run of digits and commas, unsigned (``-18`` is
    18, ``5.5`` is 5, ``18.0`` is 0). ``decimal``: signed, with decimals (``18.0`` is 18).
    """
    found = NUMBER_PATTERNS[rule].findall(text)
    return Decimal(found[-1].replace(",", "")) if found else None


def number_matches(hyps: Sequence[str], refs: Sequence[str], rule: str = "integer") -> List[bool]:
    """Per example: is the last number of the hypothesis that of the reference?"""
    _check_pairs(hyps, refs)
    if rule not in MGSM_RULES:
        raise ValueError(f"number rule {rule!r}: choose from {MGSM_RULES}")
    matches = []
    for hyp, ref in zip(hyps, refs):
        gold = last_number(ref, rule)
        if gold is None:
            raise ValueError(f"reference {ref!r} holds no number to compare with")
        matches.append(last_number(hyp, rule) == gold)
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


def bleu_statistics(hyps: Sequence[str], refs: Sequence[str], tokenize: str):
    """sacreBLEU's BLEUScore (n-gram ``counts``/``totals``, ``sys_len``, ``ref_len``) of a
    batch, to be summed over batches as fairseq's --eval-bleu does."""
    _check_pairs(hyps, refs)
    return sacrebleu.BLEU(tokenize=tokenize).corpus_score(list(hyps), [list(refs)])


@functools.lru_cache(maxsize=1)
def py_rouge_exceptions() -> Dict[str, str]:
    """py-rouge's WordNet exception table (``went`` -> ``go``), both of its files,
    read from the installed py-rouge package without importing it (its module needs
    ``pkg_resources`` and nltk's punkt data)."""
    try:
        files = importlib.metadata.files("py-rouge") or []
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            "ROUGE as py-rouge computes it needs py-rouge's WordNet table: pip install "
            "py-rouge==1.1 (or pass the rouge-score tokenizer option)"
        ) from None
    table = {}
    for name in ("wordnet_key_value.txt", "wordnet_key_value_special_cases.txt"):
        path = next((f.locate() for f in files if f.name == name), None)
        if path is None:
            raise ImportError(f"the installed py-rouge has no {name}; reinstall py-rouge==1.1")
        with open(path, encoding="utf-8") as lines:
            table.update(line.strip().split("|") for line in lines if line.strip())
    return table


class PyRougeTokenizer:
    """py-rouge 1.1's preprocessing (``Rouge(["rouge-l"])`` defaults) as a rouge-score
    tokenizer: the first 665 characters, lower-cased, every character but ``[a-z0-9]``
    a space, nltk's Treebank word split (``cannot`` kept whole), and each token longer
    than 3 characters replaced by its WordNet exception or its Porter stem
    (``ORIGINAL_ALGORITHM``). One line of text (py-rouge splits sentences at newlines)."""

    LENGTH_LIMIT = 665

    def __init__(self):
        from nltk.stem.porter import PorterStemmer
        from nltk.tokenize import NLTKWordTokenizer

        self.exceptions = py_rouge_exceptions()
        self.stemmer = PorterStemmer(PorterStemmer.ORIGINAL_ALGORITHM)
        self.words = NLTKWordTokenizer()

    def tokenize(self, text: str) -> List[str]:
        text = re.sub("[^a-z0-9]", " ", text.strip()[: self.LENGTH_LIMIT].lower()).strip()
        tokens = self.words.tokenize(text.replace("cannot", "_cannot_"))
        stems = [self.exceptions.get(t) or self.stemmer.stem(t) if len(t) > 3 else t for t in tokens]
        return " ".join(stems).replace("_cannot_", "cannot").split()


def rouge_scorer(tokenizer: str = "py-rouge"):
    """rouge-score's scorer of ROUGE-1/2/L F1 on ``tokenizer``'s tokens: ``py-rouge``
    (:class:`PyRougeTokenizer`, the paper's) or ``rouge-score`` (its own, unstemmed)."""
    from rouge_score import rouge_scorer as scorers

    if tokenizer not in ROUGE_TOKENIZERS:
        raise ValueError(f"ROUGE tokenizer {tokenizer!r}: choose from {ROUGE_TOKENIZERS}")
    if tokenizer == "py-rouge":
        return scorers.RougeScorer(list(ROUGE_TYPES), tokenizer=PyRougeTokenizer())
    return scorers.RougeScorer(list(ROUGE_TYPES))


def rouge_sums(hyps: Sequence[str], refs: Sequence[str], tokenizer: str = "py-rouge") -> Dict[str, float]:
    """Sums over examples of ROUGE-1/2/L F1 (fractions); an empty hypothesis scores 0."""
    _check_pairs(hyps, refs)
    scorer = rouge_scorer(tokenizer)
    sums = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hyps, refs):
        scores = scorer.score(ref, hyp)
        for key in ROUGE_TYPES:
            sums[key] += scores[key].fmeasure
    return sums


def rouge(hyps: Sequence[str], refs: Sequence[str], tokenizer: str = "py-rouge") -> Dict[str, float]:
    """Mean ROUGE-1/2/L F1 over examples, in percent."""
    if not hyps:
        raise ValueError("no hypotheses to score")
    return {key: 100.0 * total / len(hyps) for key, total in rouge_sums(hyps, refs, tokenizer).items()}


INSTRUCT_FAMILIES = ("mmlu", "bbh-nlp", "tydiqa", "mgsm", "iwslt14")
REFERENCE_TEXTS = ("roundtrip", "raw")
IWSLT14_TOKENIZE = {"deen": "13a", "ende": "intl"}  # the paper's sacreBLEU tokenizer per direction


@dataclasses.dataclass(frozen=True)
class InstructRules:
    """How the instruct evaluation compares a hypothesis with its reference; the
    defaults are the paper's. ``reference_text``: the target after the tokenizer round
    trip (``roundtrip``) or the raw jsonl target (``raw``); both sides cleaned of
    tokenization spaces (``clean_up_tokenization_spaces``) and lower-cased
    (``lowercase``); MGSM's answer by ``mgsm_rule`` (:func:`last_number`)."""

    reference_text: str = "roundtrip"
    clean_up_tokenization_spaces: bool = True
    lowercase: bool = True
    mgsm_rule: str = "integer"

    def __post_init__(self):
        if self.reference_text not in REFERENCE_TEXTS:
            raise ValueError(f"reference text {self.reference_text!r}: choose from {REFERENCE_TEXTS}")
        if self.mgsm_rule not in MGSM_RULES:
            raise ValueError(f"MGSM rule {self.mgsm_rule!r}: choose from {MGSM_RULES}")

    def prepare(self, text: str) -> str:
        """``text`` (a hypothesis or reference) as it is compared."""
        return decoded_text(text, self.lowercase, self.clean_up_tokenization_spaces)

    def describe(self, family: str) -> str:
        """The comparison used for ``family``, in words (the report's ``rule``)."""
        text = "hypothesis and reference" if self.reference_text == "roundtrip" else "hypothesis and raw jsonl target"
        steps = [s for s, on in (("tokenizer clean-up", self.clean_up_tokenization_spaces),
                                 ("lower-cased", self.lowercase)) if on]
        prepared = f"{text} decoded{' with ' + ', '.join(steps) if steps else ''}"
        if family == "mgsm":
            return f"last {self.mgsm_rule} of {prepared}, commas removed, equal"
        if family == "iwslt14":
            return f"corpus sacreBLEU of {prepared}"
        return f"exact match of {prepared}, stripped"


def score_instruct_set(family: str, hyps: Sequence[str], refs: Sequence[str], groups: Sequence[str],
                       rules: InstructRules = InstructRules()) -> Dict:
    """The score of one instruct set (docs/METHOD.md §7) on prepared hypotheses and references
    (:meth:`InstructRules.prepare`), with one group per example: {metric, score, groups}.

    MMLU (accuracy, micro over questions), BBH-NLP (accuracy, macro over tasks), TyDiQA
    (exact match, micro), MGSM (the last number equal, micro), IWSLT14 (corpus sacreBLEU
    per direction group, 13a for deen and intl for ende, averaged over directions).
    """
    _check_pairs(hyps, refs)
    if family not in INSTRUCT_FAMILIES:
        raise ValueError(f"instruct family {family!r}: choose from {INSTRUCT_FAMILIES}")
    if family == "iwslt14":
        entry = {"metric": "sacreBLEU", "groups": {}}
        for group in sorted(set(groups)):
            if group not in IWSLT14_TOKENIZE:
                raise ValueError(f"IWSLT14 direction {group!r}: choose from {tuple(IWSLT14_TOKENIZE)}")
            pairs = [(h, r) for h, r, g in zip(hyps, refs, groups) if g == group]
            entry["groups"][group] = dict(
                bleu(*zip(*pairs), tokenize=IWSLT14_TOKENIZE[group], lowercase=rules.lowercase), examples=len(pairs)
            )
        entry["score"] = sum(g["score"] for g in entry["groups"].values()) / len(entry["groups"])
        return entry
    if family == "mgsm":
        correct = number_matches(hyps, refs, rules.mgsm_rule)
    else:
        correct = [h == r for h, r in zip(hyps, refs)]
    accuracy = grouped_accuracy(correct, groups)
    average = "macro" if family == "bbh-nlp" else "micro"
    kind = "exact match" if family == "tydiqa" else "accuracy"
    return {"metric": f"{kind} % ({average} over {'tasks' if average == 'macro' else 'examples'})",
            "score": accuracy[average], "groups": accuracy["groups"]}


def _check_pairs(hyps, refs):
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
