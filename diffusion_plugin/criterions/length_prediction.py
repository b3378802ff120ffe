"""Stage two of the paper's length prediction: train the separate predictor alone."""

import math
from dataclasses import dataclass

import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass

from diffusion_plugin.modules.length_classes import length_targets


@dataclass
class LengthPredictionCriterionConfig(FairseqDataclass):
    pass


@register_criterion("length_prediction", dataclass=LengthPredictionCriterionConfig)
class LengthPredictionCriterion(FairseqCriterion):
    """Cross-entropy of the separate length predictor (``--length-predictor separate``)
    on the prompt-only pass; class k = k+1 target tokens, no label smoothing
    (docs/METHOD.md §5). ``sample_size`` is the number of examples."""

    def forward(self, model, sample, reduce=True):
        if not hasattr(model, "length_predictor"):
            raise ValueError(
                "--criterion length_prediction trains the separate length predictor: add "
                "--length-predictor separate (and --finetune-from-model DIFFUSION.pt)"
            )
        logits = model.forward_length(sample["net_input"]["src_tokens"]).float()
        targets = length_targets(sample["target"], self.padding_idx, logits.size(-1))
        loss = F.cross_entropy(logits, targets, reduction="sum")
        predicted = logits.argmax(-1)
        batch_size = targets.size(0)
        logging_output = {
            "loss": loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": batch_size,
            "sample_size": batch_size,
            "correct": int((predicted == targets).sum()),
            "abs_error": int((predicted - targets).abs().sum()),
        }
        return loss, batch_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        def total(key):
            return utils.item(sum(log.get(key, 0) for log in logging_outputs))

        sample_size = max(total("sample_size"), 1)
        metrics.log_scalar("loss", total("loss") / sample_size / math.log(2), sample_size, round=3)
        metrics.log_scalar("length_accuracy", 100.0 * total("correct") / sample_size, sample_size, round=2)
        metrics.log_scalar("length_mae", total("abs_error") / sample_size, sample_size, round=3)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
