"""RDM's reweighted absorbing-diffusion loss over the target tokens (Ye et al., 2023, §3)."""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from diffusion_plugin.absorbing_diffusion import WEIGHTINGS, AbsorbingDiffusion
from diffusion_plugin.constants import MASK_SYMBOL
from diffusion_plugin.modules.length_classes import length_targets
from diffusion_plugin.option_ranges import check_ranges


@dataclass
class MaskedDiffusionCriterionConfig(FairseqDataclass):
    time_sampling: ChoiceEnum(["coupled", "single"]) = field(
        default="coupled",
        metadata={
            "help": "coupled: two nested noised copies per example (RDM); "
            "single: one noised copy per example"
        },
    )
    weighting: ChoiceEnum(list(WEIGHTINGS)) = field(
        default="linear",
        metadata={
            "help": "per-row loss weight: linear T-t+1, constant T, elbo the schedule's ELBO "
            "weight T (rate(t) - rate(t-1)) / rate(t) (T/t for the linear schedule)"
        },
    )
    noise_schedule: str = field(
        default="linear",
        metadata={
            "help": "forward masking probability rate(t, T) at time t (schedules.py): linear "
            "t/T (the paper's) or cosine sin(pi t / 2T); stored with the checkpoint"
        },
    )
    label_smoothing: float = field(
        default=0.0, metadata={"help": "label smoothing (0.1 for models trained from scratch)"}
    )
    length_loss_factor: float = field(
        default=0.1, metadata={"help": "weight of the jointly trained length head's loss (0: off)"}
    )


def batch_seed(sample) -> int:
    """The seed of one batch's time, mask and dropout draws: fairseq's per-update seed
    (its trainer seeds torch with ``--seed`` + the number of updates before every update)
    mixed with the batch's first example id. A batch then draws the same noise whichever
    worker or ``--update-freq`` slot it lands in, so N workers train as one worker with
    ``--update-freq N``, and workers do not share their noise. Mixed as fairseq's
    ``data_utils.numpy_seed`` mixes seeds, into 32 bits (torch's CPU generator keeps 32)."""
    return hash((torch.initial_seed(), int(sample["id"][0]))) % 2**32


@register_criterion("masked_diffusion", dataclass=MaskedDiffusionCriterionConfig)
class MaskedDiffusionCriterion(FairseqCriterion):
    """Loss of one batch (R noised rows: R = 2B when coupled, B when single)::

        loss = sum_rows w(t_row) / n_row * sum_{masked i} [(1-ls) CE_i]
             + sum_rows T / n_row * sum_{masked i} [ls * mean_v(-log p_v)]
             + length_loss_factor * R / B * sum_examples CE(length)

    with n_row the row's maskable (target) tokens; ``sample_size`` = R, so the
    optimised quantity is the mean over rows. The noise is an
    :class:`AbsorbingDiffusion` with the task's ``--num-diffusion-steps`` T and this
    criterion's ``--noise-schedule``.
    """

    def __init__(self, cfg: MaskedDiffusionCriterionConfig, task):
        super().__init__(task)
        if not hasattr(task.cfg, "num_diffusion_steps"):
            raise ValueError(
                f"--criterion masked_diffusion needs --task prompted_translation, got "
                f"{type(task).__name__}"
            )
        check_ranges(cfg)
        self.cfg = cfg
        mask_idx = task.source_dictionary.index(MASK_SYMBOL)
        self.diffusion = AbsorbingDiffusion(mask_idx, task.cfg.num_diffusion_steps, cfg.noise_schedule)

    def forward(self, model, sample, reduce=True):
        if hasattr(model, "length_predictor"):
            raise ValueError(
                "--length-predictor separate freezes the denoiser; train the diffusion with "
                "--length-predictor joint, then the predictor with --criterion "
                "length_prediction --length-predictor separate --finetune-from-model"
            )
        tokens, maskable = sample["tokens"], sample["target_mask"]
        prompt_lengths = sample["net_input"]["src_lengths"]
        batch_size = tokens.size(0)
        prompt_rows = utils.new_arange(tokens, batch_size)  # the example of each noised row
        with utils.set_torch_seed(batch_seed(sample)):
            if self.cfg.time_sampling == "coupled":
                noised, masked, t = self.diffusion.q_sample_coupled(tokens, maskable)
                maskable = maskable.repeat(2, 1)
                tokens = tokens.repeat(2, 1)
                prompt_lengths = prompt_lengths.repeat(2)
                prompt_rows = prompt_rows.repeat(2)
            else:
                t = self.diffusion.sample_time(batch_size, device=tokens.device)
                noised, masked = self.diffusion.q_sample(tokens, maskable, t)
            num_rows = tokens.size(0)
            predict_length = self.cfg.length_loss_factor > 0

            net_output = model(
                sample["net_input"]["src_tokens"],
                prompt_lengths,
                noised,
                masked,
                predict_length=predict_length,
                prompt_rows=prompt_rows,
            )
        lprobs = F.log_softmax(net_output["word_logits"].float(), dim=-1)
        targets = tokens[masked]
        nll = -lprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)

        row_of_token = masked.nonzero()[:, 0]
        maskable_per_row = maskable.sum(1).float()
        row_weight = self.diffusion.loss_weight(t, self.cfg.weighting) / maskable_per_row
        ls = self.cfg.label_smoothing
        token_loss = (1.0 - ls) * nll * row_weight[row_of_token]
        if ls > 0:
            smooth_weight = self.diffusion.num_steps / maskable_per_row
            token_loss = token_loss + ls * (-lprobs.mean(-1)) * smooth_weight[row_of_token]
        diffusion_loss = token_loss.sum()

        length_loss = diffusion_loss.new_zeros(())
        if predict_length:
            length_loss = F.cross_entropy(
                net_output["length_logits"].float(),
                length_targets(
                    sample["target"], self.padding_idx, net_output["length_logits"].size(-1)
                ),
                reduction="sum",
            )
        loss = diffusion_loss + self.cfg.length_loss_factor * length_loss * num_rows / batch_size

        logging_output = {
            "loss": loss.data,
            "diffusion_loss": diffusion_loss.data,
            "nll_loss": nll.sum().data,
            "length_loss": length_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": batch_size,
            "sample_size": num_rows,
            "masked_tokens": int(masked.sum()),
            "correct": int((lprobs.argmax(-1) == targets).sum()),
            "mask_ratio": float((masked.sum(1).float() / maskable_per_row).sum()),
        }
        return loss, num_rows, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        def total(key):
            return utils.item(sum(log.get(key, 0) for log in logging_outputs))

        sample_size = total("sample_size")
        masked_tokens = total("masked_tokens")
        nsentences = total("nsentences")
        metrics.log_scalar("loss", total("loss") / sample_size / math.log(2), sample_size, round=3)
        metrics.log_scalar("sample_size", sample_size, round=1)  # rows per update (valid: per batch)
        metrics.log_scalar(
            "diffusion_loss", total("diffusion_loss") / sample_size / math.log(2), sample_size, round=3
        )
        metrics.log_scalar(
            "nll_loss", total("nll_loss") / max(masked_tokens, 1) / math.log(2), masked_tokens, round=3
        )
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))
        metrics.log_scalar(
            "length_loss", total("length_loss") / max(nsentences, 1) / math.log(2), nsentences, round=3
        )
        metrics.log_scalar(
            "accuracy", 100.0 * total("correct") / max(masked_tokens, 1), masked_tokens, round=2
        )
        metrics.log_scalar("mask_ratio", total("mask_ratio") / sample_size, sample_size, round=3)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
