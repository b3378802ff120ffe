"""--checkpoint-activations / --offload-activations reach fairseq's encoder layers, and
the model trains inside fairseq's FSDP wrapping (the latter needs CUDA)."""

import copy
import sys

import pytest
import torch
from fairseq import tasks, utils
from fairseq.distributed import fsdp_enable_wrap, fsdp_wrap

from helpers import SCRIPTS, run, training_cfg
from diffusion_plugin.criterions.masked_diffusion import MaskedDiffusionCriterion


def sample_of(task, split="valid", size=8):
    dataset = task.dataset(split)
    return dataset.collater([dataset[i] for i in range(size)])


@pytest.mark.parametrize("offload", [False, True])
def test_checkpointed_layers_give_the_same_loss_and_gradients(tiny_data, tiny_task, offload):
    """Layers are wrapped with fairseq's checkpoint_wrapper; under --bf16-autocast the
    recomputation changes the gradient by less than 1% (cosine > 0.999)."""
    extra = ["--checkpoint-activations"] + (["--offload-activations"] if offload else [])
    cfg = training_cfg(tiny_data, "--bf16-autocast", *extra)
    torch.manual_seed(0)
    checkpointed = tiny_task.build_model(cfg.model)
    layers = checkpointed.encoder.sentence_encoder.layers
    assert all(hasattr(layer, "precheckpoint_forward") for layer in layers)
    assert all(layer.forward.args[1] is offload for layer in layers)  # offload_to_cpu
    plain = tiny_task.build_model(training_cfg(tiny_data, "--bf16-autocast").model)
    plain.load_state_dict(copy.deepcopy(checkpointed.state_dict()))
    criterion = MaskedDiffusionCriterion(cfg.criterion, tiny_task)
    sample = sample_of(tiny_task)
    losses, grads = [], []
    for model in (plain, checkpointed):
        model.train()
        torch.manual_seed(0)
        loss, _, _ = criterion(model, sample)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.999


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="fairscale's FSDP gathers parameters with CUDA calls; no CUDA here")
def test_training_step_inside_fsdp_wrapping(tiny_data):
    """As fairseq-train --ddp-backend fully_sharded builds it: each layer its own FSDP unit."""
    cfg = training_cfg(tiny_data, "--ddp-backend", "fully_sharded", "--checkpoint-activations",
                       "--bf16-autocast")
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    with fsdp_enable_wrap(cfg.distributed_training):
        model = fsdp_wrap(task.build_model(cfg.model))
    model = model.cuda()
    inner = model.module.module if hasattr(model.module, "module") else model.module
    layers = inner.encoder.sentence_encoder.layers
    assert all(type(layer).__name__ == "FullyShardedDataParallel" for layer in layers)
    criterion = MaskedDiffusionCriterion(cfg.criterion, task)
    sample = utils.move_to_cuda(sample_of(task))
    loss, _, _ = criterion(model, sample)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.slow  # a subprocess
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: the script would train")
def test_gpu_check_refuses_to_run_without_cuda(tmp_path):
    result = run([sys.executable, SCRIPTS / "gpu_check.py", "--workdir", tmp_path], ok=False)
    assert "needs a CUDA GPU" in result.stderr
    assert not any(tmp_path.iterdir())
