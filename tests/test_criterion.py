"""The masked-diffusion criterion against a loss computed by hand, row by row."""

import math

import pytest
import torch
import torch.nn.functional as F
from fairseq import metrics

from diffusion_plugin.criterions.masked_diffusion import MaskedDiffusionCriterion, batch_seed


class FixedLogits(torch.nn.Module):
    """Stands in for the model: seeded logits for every scored position."""

    def __init__(self, vocab, length_classes=16):
        super().__init__()
        self.vocab = vocab
        self.length_classes = length_classes
        self.calls = []

    def forward(self, src_tokens, src_lengths, noised_tokens, score_mask, predict_length=True,
                prompt_rows=None):
        self.calls.append((noised_tokens.clone(), score_mask.clone(), prompt_rows))
        generator = torch.Generator().manual_seed(int(score_mask.sum()))
        word_logits = torch.randn(int(score_mask.sum()), self.vocab, generator=generator)
        length_logits = torch.randn(src_tokens.size(0), self.length_classes, generator=generator)
        return {"word_logits": word_logits, "length_logits": length_logits if predict_length else None}


def build(tiny_task, tiny_cfg, **overrides):
    cfg = tiny_cfg.criterion.copy()
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return MaskedDiffusionCriterion(cfg, tiny_task)


def first_batch(task, size=6):
    dataset = task.dataset("valid")
    return dataset.collater([dataset[i] for i in range(size)])


@pytest.mark.parametrize("weighting", ["linear", "constant", "elbo"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_loss_matches_hand_computation(tiny_task, tiny_cfg, weighting, label_smoothing):
    criterion = build(
        tiny_task, tiny_cfg, weighting=weighting, label_smoothing=label_smoothing, length_loss_factor=0.5
    )
    sample = first_batch(tiny_task)
    model = FixedLogits(len(tiny_task.target_dictionary))
    torch.manual_seed(3)
    loss, sample_size, log = criterion(model, sample)

    torch.manual_seed(batch_seed(sample))  # the criterion's seed: torch's seed 3 and the batch's first id
    noised, masked, t = criterion.diffusion.q_sample_coupled(sample["tokens"], sample["target_mask"])
    assert torch.equal(model.calls[0][1], masked)
    assert model.calls[0][2].tolist() == list(range(sample["nsentences"])) * 2  # each copy's example
    logits = model(sample["net_input"]["src_tokens"], None, noised, masked)
    lprobs = F.log_softmax(logits["word_logits"], -1)
    tokens = sample["tokens"].repeat(2, 1)
    maskable = sample["target_mask"].repeat(2, 1)
    T = 50
    expected, flat = 0.0, 0
    for row in range(tokens.size(0)):
        tr = t[row].item()
        weight = {"linear": T - tr + 1, "constant": T, "elbo": T / tr}[weighting]
        n_row = maskable[row].sum().item()
        for pos in masked[row].nonzero().view(-1).tolist():
            nll = -lprobs[flat, tokens[row, pos]].item()
            smooth = -lprobs[flat].mean().item()
            expected += (1 - label_smoothing) * nll * weight / n_row + label_smoothing * smooth * T / n_row
            flat += 1
    length_targets = (sample["target"].ne(1).sum(1) - 2).clamp(0, 15)
    length_nll = F.cross_entropy(logits["length_logits"], length_targets, reduction="sum").item()
    expected += 0.5 * length_nll * 2
    assert sample_size == 2 * sample["nsentences"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert log["masked_tokens"] == flat
    ratio = sum(masked[r].sum().item() / maskable[r].sum().item() for r in range(tokens.size(0)))
    assert log["mask_ratio"] == pytest.approx(ratio)


def test_noise_follows_the_update_seed_and_the_batch_not_earlier_draws(tiny_task, tiny_cfg):
    criterion = build(tiny_task, tiny_cfg)
    sample = first_batch(tiny_task)
    model = FixedLogits(len(tiny_task.target_dictionary))
    torch.manual_seed(3)  # what fairseq's trainer does before an update
    criterion(model, sample)
    torch.rand(100)  # another micro-batch of the same update drew first
    criterion(model, sample)
    after = torch.rand(1)
    torch.manual_seed(3)
    torch.rand(100)
    assert torch.equal(torch.rand(1), after), "the criterion leaves torch's generator as it found it"
    torch.manual_seed(4)  # the next update
    criterion(model, sample)
    torch.manual_seed(3)
    criterion(model, dict(sample, id=sample["id"] + 1))  # another batch in the same update
    masks = [masked for _, masked, _ in model.calls]
    assert torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], masks[2]) and not torch.equal(masks[0], masks[3])


def test_single_sampling_scores_one_copy_per_example(tiny_task, tiny_cfg):
    criterion = build(tiny_task, tiny_cfg, time_sampling="single", length_loss_factor=0.0)
    sample = first_batch(tiny_task)
    model = FixedLogits(len(tiny_task.target_dictionary))
    loss, sample_size, log = criterion(model, sample)
    noised, masked, _ = model.calls[0]
    assert sample_size == sample["nsentences"] == noised.size(0)
    assert log["length_loss"] == 0
    assert not masked[~sample["target_mask"]].any()


def test_logged_metrics(tiny_task, tiny_cfg, tiny_model):
    criterion = build(tiny_task, tiny_cfg)
    sample = first_batch(tiny_task, 16)
    torch.manual_seed(0)
    _, _, log = criterion(tiny_model, sample)
    with metrics.aggregate() as agg:
        MaskedDiffusionCriterion.reduce_metrics([log, log])
    values = agg.get_smoothed_values()
    for key in ("loss", "diffusion_loss", "nll_loss", "length_loss", "accuracy", "mask_ratio", "ppl"):
        assert key in values and math.isfinite(values[key])
    assert 0 <= values["accuracy"] <= 100
    assert 0 < values["mask_ratio"] <= 1
    assert values["loss"] == pytest.approx(log["loss"].item() / log["sample_size"] / math.log(2), rel=1e-3)


def test_the_criterion_noises_with_the_tasks_T_and_the_generator_holds_no_diffusion(tiny_data):
    from fairseq import tasks

    from helpers import training_cfg

    cfg = training_cfg(tiny_data, "--num-diffusion-steps", "7")
    task = tasks.setup_task(cfg.task)
    criterion = task.build_criterion(cfg.criterion)
    generator = task.build_generator([task.build_model(cfg.model)], cfg.generation)
    assert not hasattr(generator, "diffusion") and generator.strategy.kind == "reparam"
    assert criterion.diffusion.num_steps == 7 and criterion.diffusion.schedule == "linear"
    t = torch.full((3,), 7)
    assert criterion.diffusion.loss_weight(t, "elbo").tolist() == [1.0, 1.0, 1.0]  # T / t
