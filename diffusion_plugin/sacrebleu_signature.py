"""``--scoring sacrebleu`` with sacreBLEU's signature in fairseq-generate's score line.

fairseq's scorer tokenizes with its own copy of sacreBLEU's tokenizers and scores with
``tokenize="none"``, so its line carries no signature. This one scores the detokenized
text with ``sacrebleu.BLEU`` itself (the same tokenizer, hence the same score) and prints
``BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:... = ...``, as the
``sacrebleu`` command does. It replaces fairseq's entry under the same name and config.
"""

import sacrebleu
from fairseq.scoring import SCORER_REGISTRY
from fairseq.scoring.bleu import SacrebleuScorer


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
