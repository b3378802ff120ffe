"""LoRA through peft (--lora-rank): only the adapters train, checkpoints load everywhere
a plain one does, scripts/merge_lora.py folds them into a plain checkpoint."""

import re
import sys

import pytest
import torch
from fairscale.nn import FullyShardedDataParallel, enable_wrap
from fairseq import checkpoint_utils
from fairseq.trainer import Trainer

from helpers import BIN, SCRIPTS, TASK_ARGS, TINY_ARGS, batch, run, save_checkpoint, training_cfg

from diffusion_plugin.tools.lora_merge import merge_checkpoint

LORA = ["--lora-rank", "4", "--optimizer", "adam", "--lr", "1e-2"]


def lora_trainer(tiny_data, tiny_task, *extra):
    cfg = training_cfg(tiny_data, *LORA, "--max-tokens", "1000", *extra)
    torch.manual_seed(0)
    model = tiny_task.build_model(cfg.model)
    return cfg, Trainer(cfg, tiny_task, model, tiny_task.build_criterion(cfg.criterion))


def changed_parameters(trainer, sample):
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    log = trainer.train_step([sample])
    assert log is not None and torch.isfinite(torch.tensor(log["loss"]))
    return {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}


def test_a_training_step_changes_only_the_adapters_and_the_length_head(tiny_data, tiny_task):
    _, trainer = lora_trainer(tiny_data, tiny_task)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in trainer.model.named_parameters() if "lora_" in n or n.startswith("length_head.")}
    changed = changed_parameters(trainer, batch(tiny_task, range(8), "train"))
    # B starts at zero, so the first step moves B alone: every layer's 4 attention
    # projections and 2 feed-forward linears
    assert {n for n in changed if "lora_" in n} == {n for n in trainable if "lora_B" in n}
    assert len({n for n in changed if "lora_" in n}) == 2 * 6
    changed |= changed_parameters(trainer, batch(tiny_task, range(8, 16), "train"))
    adapters = {n for n in changed if "lora_" in n}
    assert len(adapters) == 2 * 6 * 2
    assert changed - adapters == {"length_head.weight", "length_head.bias"}


def test_train_embeddings_and_module_choice(tiny_data, tiny_task):
    _, trainer = lora_trainer(tiny_data, tiny_task, "--lora-modules", "q_proj,v_proj", "--lora-train-embeddings")
    changed = changed_parameters(trainer, batch(tiny_task, range(8), "train"))
    assert "encoder.sentence_encoder.embed_tokens.weight" in changed
    assert {n.split(".")[-4] for n in changed if "lora_" in n} == {"q_proj", "v_proj"}
    assert not any(n.startswith("encoder.lm_head.dense") or "fc1" in n for n in changed)
    with pytest.raises(ValueError, match="--lora-modules 'q_proj,dense'"):
        lora_trainer(tiny_data, tiny_task, "--lora-modules", "q_proj,dense")


def test_fully_sharded_is_refused_with_what_to_use(tiny_data, tiny_task):
    cfg = training_cfg(tiny_data, *LORA)
    with enable_wrap(wrapper_cls=FullyShardedDataParallel):
        with pytest.raises(ValueError, match="--ddp-backend legacy_ddp"):
            tiny_task.build_model(cfg.model)


def logits_of(model, sample):
    model.eval()
    tokens = sample["tokens"]
    return model.logits(tokens, None, sample["net_input"]["src_lengths"])


@pytest.fixture(scope="module")
def lora_checkpoint(tiny_data, tiny_task, tmp_path_factory):
    """A LoRA checkpoint after 3 updates (adapters no longer zero) and the plain one it started from."""
    work = tmp_path_factory.mktemp("lora")
    plain = save_checkpoint(training_cfg(tiny_data, "--optimizer", "adam"), work / "plain.pt")
    cfg, trainer = lora_trainer(tiny_data, tiny_task)
    trainer.load_checkpoint(str(plain), reset_optimizer=True, reset_lr_scheduler=True, reset_meters=True)
    for start in (0, 8, 16):
        trainer.train_step([batch(tiny_task, range(start, start + 8), "train")])
    trainer.consolidate_optimizer()
    trainer.save_checkpoint(str(work / "lora.pt"), {})
    return plain, work / "lora.pt"


def test_a_plain_checkpoint_starts_an_adapted_model_equal_to_it(tiny_data, tiny_task, lora_checkpoint):
    plain, _ = lora_checkpoint
    sample = batch(tiny_task, range(4))
    (plain_model,), _ = checkpoint_utils.load_model_ensemble([str(plain)])
    cfg = training_cfg(tiny_data, *LORA)
    adapted = tiny_task.build_model(cfg.model)
    adapted.load_state_dict(checkpoint_utils.load_checkpoint_to_cpu(str(plain))["model"], strict=True)
    torch.testing.assert_close(logits_of(adapted, sample), logits_of(plain_model, sample), atol=1e-5, rtol=0)


def test_a_lora_checkpoint_into_a_plain_model_names_the_fix(tiny_data, tiny_task, lora_checkpoint):
    _, lora = lora_checkpoint
    plain = tiny_task.build_model(training_cfg(tiny_data).model)
    with pytest.raises(ValueError, match="holds LoRA adapters .* scripts/merge_lora.py"):
        plain.load_state_dict(checkpoint_utils.load_checkpoint_to_cpu(str(lora))["model"], strict=True)


def test_merged_checkpoint_gives_the_adapter_models_logits(tiny_data, tiny_task, lora_checkpoint, tmp_path):
    plain, lora = lora_checkpoint
    merged = tmp_path / "merged.pt"
    merge_checkpoint(str(lora), str(merged), str(tiny_data))
    state = torch.load(merged, weights_only=False)
    assert state["cfg"]["model"]["lora_rank"] == 0 and not any("lora_" in k or "base_layer" in k for k in state["model"])
    (adapted,), _ = checkpoint_utils.load_model_ensemble([str(lora)])
    (plain_model,), _ = checkpoint_utils.load_model_ensemble([str(merged)])
    (start,), _ = checkpoint_utils.load_model_ensemble([str(plain)])
    sample = batch(tiny_task, range(8))
    expected = logits_of(adapted, sample)
    torch.testing.assert_close(logits_of(plain_model, sample), expected, atol=1e-5, rtol=0)
    assert (logits_of(start, sample) - expected).abs().max() > 1e-3, "the adapters changed the model"
    with pytest.raises(ValueError, match="no LoRA adapters"):
        merge_checkpoint(str(merged), str(tmp_path / "again.pt"))


@pytest.mark.slow
def test_two_workers_bf16_lora_checkpoint_decodes_and_trains_the_length_predictor(tiny_data, tmp_path):
    """--ddp-backend legacy_ddp with two workers and --bf16-autocast; the checkpoint decodes
    in fairseq-generate and fairseq-interactive and starts stage two (the separate length
    predictor)."""
    common = [*TINY_ARGS, "--lora-rank", "4", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "8",
              "--seed", "1", "--disable-validation", "--no-epoch-checkpoints", "--num-workers", "0"]
    run(
        [
            sys.executable, SCRIPTS / "train_local_workers.py", "--workers", "2", "--",
            tiny_data, *common, "--bf16-autocast", "--max-update", "3", "--save-dir", tmp_path / "lora",
        ],
        timeout=900,
    )
    checkpoint = tmp_path / "lora" / "checkpoint_last.pt"
    state = torch.load(checkpoint, weights_only=False)
    assert any("lora_B" in k for k in state["model"])
    result = run(
        [
            BIN / "fairseq-generate", tiny_data, *TASK_ARGS, "--path", checkpoint, "--gen-subset", "test",
            "--iter-decode-max-iter", "3", "--iter-decode-with-beam", "2", "--batch-size", "8",
        ]
    )
    assert len(re.findall(r"^H-\d+\t", result.stdout, re.M)) == 30
    result = run([BIN / "fairseq-interactive", tiny_data, *TASK_ARGS, "--path", checkpoint,
                  "--iter-decode-max-iter", "3"], input="reverse : w1 w2 w3 =\n")
    assert len(re.findall(r"^H-\d+\t", result.stdout, re.M)) == 1
    stage_two = [arg for arg in common if arg != "masked_diffusion"]
    stage_two[stage_two.index("--criterion") + 1:stage_two.index("--criterion") + 1] = ["length_prediction"]
    run(
        [
            BIN / "fairseq-train", tiny_data, *stage_two, "--length-predictor", "separate",
            "--finetune-from-model", checkpoint, "--max-update", "2", "--save-dir", tmp_path / "length",
        ]
    )
    second = torch.load(tmp_path / "length" / "checkpoint_last.pt", weights_only=False)["model"]
    for key, value in state["model"].items():
        if not key.startswith("length_head."):
            assert torch.equal(value, second[key]), f"{key} changed in stage two"


def test_lm_eval_model_reads_a_lora_checkpoint_as_its_merged_one(tiny_data, lora_checkpoint, tmp_path):
    from lm_eval.api.instance import Instance

    from diffusion_plugin.lm_eval import DiffusionLM

    _, lora = lora_checkpoint
    merged = tmp_path / "merged.pt"
    merge_checkpoint(str(lora), str(merged), str(tiny_data))
    requests = [Instance("loglikelihood", {}, ("reverse : w1 w2 w3 =", " w3 w2 w1"), 0)]
    scores = [DiffusionLM(path=str(path), data=str(tiny_data), mc_samples=4).loglikelihood(requests)[0][0]
              for path in (lora, merged)]
    assert scores[0] == pytest.approx(scores[1], abs=1e-4)
