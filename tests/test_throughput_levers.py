"""The training-speed levers change no loss beyond bf16 rounding (docs/SPEED.md): the
plugin's gelu gives fairseq's bits, under --prompt-attention prefix one prompt-only
pass per example, shared by its noised copies and the joint length head, gives what
running every copy's prompt through every layer gives, and --bf16-residual puts every
layer's input in bf16, in full and cached passes, and changes the loss only by rounding."""

import copy

import pytest
import torch
from fairseq import tasks
from fairseq.modules.gelu import gelu as fairseq_gelu

from helpers import training_cfg
from diffusion_plugin.criterions.masked_diffusion import MaskedDiffusionCriterion
from diffusion_plugin.models.diffusion_xlmr import gelu
from benchmarks.variants import with_fairseq_gelu, with_per_row_prompts


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


@pytest.mark.parametrize("bf16, residual", [(False, False), (True, False), (True, True)])
def test_shared_prompts_change_no_loss_or_gradient_beyond_rounding(prefix_setup, bf16, residual):
    model, criterion, sample = prefix_setup
    model.cfg.bf16_autocast, model.cfg.bf16_residual = bf16, residual
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


def record_attention_inputs(model):
    """The dtypes of the query each layer's self-attention receives (post-LN: the layer's
    input), appended to the list returned, in the full and the cached pass alike."""
    dtypes = []

    def record(attention, args, kwargs):
        dtypes.append((kwargs["query"] if "query" in kwargs else args[0]).dtype)

    for layer in model.encoder.sentence_encoder.layers:
        layer.self_attn.register_forward_pre_hook(record, with_kwargs=True)
    return dtypes


@pytest.mark.parametrize("residual", [False, True])
def test_bf16_residual_puts_every_layer_input_in_bf16_with_and_without_the_cache(prefix_setup, residual):
    model, _, sample = prefix_setup
    model.cfg.bf16_autocast, model.cfg.bf16_residual = True, residual
    dtypes = record_attention_inputs(model)
    src_tokens = sample["net_input"]["src_tokens"]
    rows = torch.arange(src_tokens.size(0))
    args = (src_tokens, sample["net_input"]["src_lengths"], sample["tokens"], sample["target_mask"])
    with torch.no_grad():
        cached = model(*args, prompt_rows=rows)  # a prompt-only pass, then the cached target pass
        full = with_per_row_prompts(model)(*args, prompt_rows=rows)
    layers = len(model.encoder.sentence_encoder.layers)
    assert len(dtypes) == 4 * layers  # prompt pass, cached pass, full pass, full length pass
    assert set(dtypes) == {torch.bfloat16 if residual else torch.float32}
    for key in ("word_logits", "length_logits"):
        assert cached[key].dtype == torch.float32
        # the cached pass gives the full pass's logits: both round the stream alike
        torch.testing.assert_close(cached[key], full[key], rtol=2e-2, atol=2e-2)


def test_bf16_residual_is_inert_without_autocast(tiny_task, tiny_model):
    tokens = tiny_task.dataset("test").collater([tiny_task.dataset("test")[i] for i in range(8)])[
        "net_input"]["src_tokens"]
    residual = copy.deepcopy(tiny_model)
    residual.cfg.bf16_residual = True  # --bf16-autocast off: nothing changes, bit for bit
    with torch.no_grad():
        assert torch.equal(tiny_model.extract_features(tokens), residual.extract_features(tokens))


def test_bf16_residual_changes_the_loss_only_by_bf16_rounding(tiny_task, tiny_cfg, tiny_model):
    criterion = MaskedDiffusionCriterion(tiny_cfg.criterion, tiny_task)
    sample = tiny_task.dataset("valid").collater([tiny_task.dataset("valid")[i] for i in range(16)])
    results = []
    for residual in (False, True):
        model = copy.deepcopy(tiny_model)  # its own cfg: the fixture's is shared
        model.cfg.bf16_autocast, model.cfg.bf16_residual = True, residual
        torch.manual_seed(0)
        loss, _, _ = criterion(model, sample)
        loss.backward()
        results.append((loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()
                                                if p.grad is not None])))
    (loss, grads), (loss_residual, grads_residual) = results
    assert loss != loss_residual  # the stream is rounded: the option does act
    # stated tolerance, as for --bf16-autocast against fp32: 2% on the loss, cosine > 0.99
    assert abs(loss_residual - loss) <= 2e-2 * loss
    assert torch.nn.functional.cosine_similarity(grads, grads_residual, dim=0) > 0.99


def test_bf16_residual_without_bf16_autocast_is_one_clear_error(tiny_data):
    cfg = training_cfg(tiny_data, "--bf16-residual")
    task = tasks.setup_task(cfg.task)
    with pytest.raises(ValueError, match="--bf16-residual .* add --bf16-autocast"):
        task.build_model(cfg.model)
