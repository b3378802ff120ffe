"""fairseq's --fp16 / --bf16 / --memory-efficient-{fp16,bf16}: the trainer casts the model
and the criterion to half or bfloat16 (``model.half()``, ``model.to(torch.bfloat16)``),
fairseq-generate --fp16 casts the model. Under each, a diffusion training step, a stage-2
length step and a decoding run, for the joint and the separate length predictor; the
FSDP units that --ddp-backend fully_sharded would flatten are each all trainable or all
frozen. (fairseq's --fp16 / --bf16 optimizers need CUDA / XLA; --memory-efficient-fp16
runs on CPU and is run here through fairseq's own Trainer.)"""

import copy
import math

import pytest
import torch
from fairscale.nn import enable_wrap
from fairseq import tasks
from fairseq.trainer import Trainer

from helpers import BIN, TASK_ARGS, run, save_checkpoint, training_cfg
from diffusion_plugin.diffusion_generator import DiffusionGenerator

DTYPES = [torch.float16, torch.bfloat16]
SEPARATE = ["--length-predictor", "separate", "--criterion", "length_prediction"]


def sample_of(task, split="train", size=8):
    dataset = task.dataset(split)
    return dataset.collater([dataset[i] for i in range(size)])


def build(tiny_data, tiny_task, *extra):
    cfg = training_cfg(tiny_data, *extra)
    torch.manual_seed(0)
    return cfg, tiny_task.build_model(cfg.model), tiny_task.build_criterion(cfg.criterion)


def trainable_gradients(model):
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_diffusion_step_with_the_joint_length_loss(tiny_data, tiny_task, dtype):
    _, model, criterion = build(tiny_data, tiny_task, "--length-loss-factor", "0.1")
    model, criterion = model.to(dtype).train(), criterion.to(dtype)
    loss, sample_size, log = criterion(model, sample_of(tiny_task))
    assert torch.isfinite(loss) and torch.isfinite(log["length_loss"]) and log["length_loss"] > 0
    loss.backward()
    grads = trainable_gradients(model)
    assert all(g is not None and g.dtype == dtype and torch.isfinite(g).all() for g in grads.values())
    assert grads["length_head.weight"].abs().sum() > 0  # the length loss reached its head


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_stage_two_length_step(tiny_data, tiny_task, dtype):
    _, model, criterion = build(tiny_data, tiny_task, *SEPARATE)
    model, criterion = model.to(dtype).train(), criterion.to(dtype)
    loss, sample_size, log = criterion(model, sample_of(tiny_task))
    assert torch.isfinite(loss) and sample_size == 8
    loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith("length_predictor."):
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        else:
            assert parameter.grad is None, name


@pytest.mark.parametrize("predictor", ["joint", "separate"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_decoding_in_half_and_bfloat16_follows_fp32(tiny_data, tiny_task, dtype, predictor):
    extra = SEPARATE if predictor == "separate" else []
    _, model, _ = build(tiny_data, tiny_task, *extra)
    model.eval()
    low = copy.deepcopy(model).to(dtype)
    sample = sample_of(tiny_task, "test", 20)
    src_tokens = sample["net_input"]["src_tokens"]
    with torch.no_grad():
        reference = model.forward_length(src_tokens)
        length_logits = low.forward_length(src_tokens)
    assert length_logits.dtype == dtype
    # stated tolerance: length log-probabilities within 0.1 nats of fp32's
    difference = (length_logits.float().log_softmax(-1) - reference.log_softmax(-1)).abs().max()
    assert difference < 0.1
    generator = DiffusionGenerator(tiny_task.target_dictionary, max_iter=4, beam_size=3, max_positions=64)
    fp32, cast = generator.generate([model], sample), generator.generate([low], sample)
    agree = total = 0
    for a, b in zip(fp32, cast):
        assert len(b) == 3 and all(torch.isfinite(h["positional_scores"]).all() for h in b)
        assert all(model.mask not in h["tokens"].tolist() for h in b)
        if len(a[0]["tokens"]) == len(b[0]["tokens"]):
            agree += int((a[0]["tokens"] == b[0]["tokens"]).sum())
            total += len(a[0]["tokens"])
    # stated tolerance: at least 80% of the tokens of equal-length outputs agree
    assert total > 0 and agree / total > 0.8


@pytest.mark.parametrize("predictor", ["joint", "separate"])
def test_fairseq_trainer_memory_efficient_fp16_updates(tiny_data, tiny_task, predictor):
    extra = ["--cpu", "--memory-efficient-fp16", "--optimizer", "adam", "--lr", "1e-3",
             "--max-tokens", "1000"]
    if predictor == "separate":
        extra += SEPARATE
    cfg, model, criterion = build(tiny_data, tiny_task, *extra)
    trainer = Trainer(cfg, tiny_task, model, criterion)
    assert all(p.dtype == torch.float16 for p in trainer.model.parameters())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    log = trainer.train_step([sample_of(tiny_task)])
    assert log is not None and torch.isfinite(torch.tensor(log["loss"]))
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    if predictor == "separate":
        assert changed and all(n.startswith("length_predictor.") for n in changed)
    else:
        assert "length_head.weight" in changed and "encoder.lm_head.dense.weight" in changed


@pytest.mark.slow  # a subprocess
@pytest.mark.parametrize("predictor", ["joint", "separate"])
def test_fairseq_generate_fp16(tiny_data, tmp_path, predictor):
    extra = ["--optimizer", "adam", "--lr", "1e-4"] + (SEPARATE if predictor == "separate" else [])
    checkpoint = save_checkpoint(training_cfg(tiny_data, *extra), tmp_path / "checkpoint.pt")
    result = run([
        BIN / "fairseq-generate", tiny_data, *TASK_ARGS, "--path", checkpoint, "--cpu", "--fp16",
        "--gen-subset", "test", "--batch-size", "16", "--iter-decode-max-iter", "3",
        "--iter-decode-with-beam", "2",
    ])
    hypotheses = [line for line in result.stdout.splitlines() if line.startswith("H-")]
    assert len(hypotheses) == 30
    assert all(math.isfinite(float(line.split("\t")[1])) for line in hypotheses)


class RecordingWrapper(torch.nn.Module):
    """Stands in for fairscale's FSDP (which needs CUDA): records the parameters each unit
    would flatten (those not already in an inner unit) and marks them as sharded."""

    units = []

    def __init__(self, module, **kwargs):
        super().__init__()
        self.module = module
        own = [p for p in module.parameters() if not hasattr(p, "_is_sharded")]
        for parameter in own:
            parameter._is_sharded = True
        RecordingWrapper.units.append(own)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


@pytest.mark.parametrize("predictor", ["joint", "separate"])
def test_each_fsdp_unit_is_all_trainable_or_all_frozen(tiny_data, predictor):
    """What fairscale's FlattenParamsWrapper asserts of every unit (uniform requires_grad
    and dtype), for the units fairseq-train builds: fsdp_wrap(task.build_model(...))."""
    from fairseq.distributed import fsdp_wrap

    extra = ["--ddp-backend", "fully_sharded", "--fp16", "--min-params-to-wrap", "1000"]
    cfg = training_cfg(tiny_data, *extra, *(SEPARATE if predictor == "separate" else []))
    task = tasks.setup_task(cfg.task)
    RecordingWrapper.units = []
    with enable_wrap(wrapper_cls=RecordingWrapper):
        fsdp_wrap(task.build_model(cfg.model))
    units = [unit for unit in RecordingWrapper.units if unit]
    assert len(units) >= 3  # the encoder layers, (the predictor,) the rest
    for unit in units:
        assert len({p.requires_grad for p in unit}) == 1 and len({p.dtype for p in unit}) == 1
    if predictor == "separate":
        assert sum(all(p.requires_grad for p in unit) for unit in units) == 1
