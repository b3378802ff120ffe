"""The training-speed levers change no loss beyond bf16 rounding (docs/SPEED.md): the
plugin's gelu gives fairseq's bits, and under --prompt-attention prefix one prompt-only
pass per example, shared by its noised copies and the joint length head, gives what
running every copy's prompt through every layer gives."""

import copy

import pytest
import torch
from fairseq import tasks
from fairseq.modules.gelu import gelu as fairseq_gelu

from helpers import training_cfg
from diffusion_plugin.criterions.masked_diffusion import MaskedDiffusionCriterion
from diffusion_plugin.models.diffusion_xlmr import gelu
from variants import with_fairseq_gelu, with_per_row_prompts


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gelu_gives_fairseqs_bits_forward_and_backward(dtype):
    torch.manual_seed(0)
    x = (3 * torch.randn(64, 300)).to(dtype)
    grad_out = torch.randn(64, 300).to(dtype)
    values, grads = [], []
    for function in (fairseq_gelu, gelu):
        leaf = x.clone().requires_grad_()
        y = function(leaf)
        y.backward(grad_out)
        values.append(y)
        grads.append(leaf.grad)
    assert values[0].dtype == values[1].dtype == dtype
    assert torch.equal(values[0], values[1]) and torch.equal(grads[0], grads[1])


def test_the_model_uses_it_in_every_layer_and_the_lm_head(tiny_model):
    functions = [m.activation_fn for m in tiny_model.modules() if hasattr(m, "activation_fn")]
    assert len(functions) == len(tiny_model.encoder.sentence_encoder.layers) + 1
    assert all(function is gelu for function in functions)


@pytest.mark.parametrize("bf16", [False, True])
def test_gelu_changes_no_loss_or_gradient(tiny_task, tiny_cfg, tiny_model, bf16):
    criterion = MaskedDiffusionCriterion(tiny_cfg.criterion, tiny_task)
    sample = tiny_task.dataset("valid").collater([tiny_task.dataset("valid")[i] for i in range(16)])
    plugin_gelu = copy.deepcopy(tiny_model)  # its own cfg: the fixture's is shared
    plugin_gelu.cfg.bf16_autocast = bf16
    results = []
    for model in (plugin_gelu, with_fairseq_gelu(copy.deepcopy(plugin_gelu))):
        torch.manual_seed(0)
        loss, _, _ = criterion(model, sample)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


@pytest.fixture()
def prefix_setup(tiny_data):
    cfg = training_cfg(tiny_data, "--prompt-attention", "prefix")
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    torch.manual_seed(0)
    model = task.build_model(cfg.model).eval()
    criterion = MaskedDiffusionCriterion(cfg.criterion, task)
    dataset = task.dataset("valid")
    return model, criterion, dataset.collater([dataset[i] for i in range(16)])


def test_prefix_attention_runs_each_prompt_once_with_the_per_row_result(prefix_setup):
    model, _, sample = prefix_setup
    src_tokens = sample["net_input"]["src_tokens"]
    rows = torch.arange(src_tokens.size(0)).repeat(2)  # the coupled draw's two copies
    args = (src_tokens, sample["net_input"]["src_lengths"][rows], sample["tokens"][rows],
            sample["target_mask"][rows])
    with torch.no_grad():
        shared = model(*args, prompt_rows=rows)
        per_row = with_per_row_prompts(copy.deepcopy(model))(*args, prompt_rows=rows)
    for key in ("word_logits", "length_logits"):
        assert shared[key].shape == per_row[key].shape
        torch.testing.assert_close(shared[key], per_row[key], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bf16", [False, True])
def test_shared_prompts_change_no_loss_or_gradient_beyond_rounding(prefix_setup, bf16):
    model, criterion, sample = prefix_setup
    model.cfg.bf16_autocast = bf16
    results = []
    for network in (model, with_per_row_prompts(copy.deepcopy(model))):
        torch.manual_seed(0)
        loss, _, logs = criterion(network, sample)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in network.parameters() if p.grad is not None])
        results.append((loss.item(), float(logs["length_loss"]), grads))
    (loss, length_loss, grads), (loss_rows, length_loss_rows, grads_rows) = results
    tolerance = 2e-2 if bf16 else 1e-5  # bf16: the two ways round their features apart
    assert length_loss > 0
    assert abs(loss - loss_rows) <= tolerance * loss_rows
    assert abs(length_loss - length_loss_rows) <= tolerance * length_loss_rows
    assert torch.nn.functional.cosine_similarity(grads, grads_rows, dim=0) > (0.99 if bf16 else 0.99999)
