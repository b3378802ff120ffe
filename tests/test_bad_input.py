"""Bad input without a test elsewhere (docs/RELIABILITY.md lists every case): one clear
error naming the flag or file and the fix, or a counted, logged change."""

import logging
import re
import shutil

import pytest
import torch
from fairseq import checkpoint_utils, tasks

from helpers import BIN, TASK_ARGS, parse_training_args, run, save_checkpoint, training_cfg
from diffusion_plugin.diffusion_generator import DiffusionGenerator

OPTIMIZER = ["--optimizer", "adam", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def checkpoint(tiny_data, tmp_path_factory):
    return save_checkpoint(training_cfg(tiny_data, *OPTIMIZER), tmp_path_factory.mktemp("ckpt") / "model.pt")


def generate(data, checkpoint, *flags, ok=True):
    return run(
        [BIN / "fairseq-generate", data, *TASK_ARGS, "--path", checkpoint, "--gen-subset", "test",
         "--iter-decode-max-iter", "2", "--batch-size", "8", "--num-workers", "0", *flags],
        ok=ok,
    )


@pytest.mark.slow  # a subprocess
def test_overlength_test_pairs_stop_generate_before_any_output(tiny_data, checkpoint):
    result = generate(tiny_data, checkpoint, "--max-positions", "12", ok=False)
    assert not re.search(r"^[SHD]-\d+", result.stdout, re.M)
    assert re.match(
        r"ValueError: \d+ of 30 examples are longer than --max-positions 12 .*--truncate-source",
        result.stderr.strip().splitlines()[-1],
    )


@pytest.mark.slow  # a subprocess
def test_truncate_source_cuts_prompts_with_a_logged_count(tiny_data, checkpoint, tiny_task):
    result = generate(tiny_data, checkpoint, "--max-positions", "12", "--truncate-source")
    cut = re.search(r"cut the prompts of (\d+) of 30 pairs to fit --max-positions 12", result.stderr)
    assert cut and int(cut[1]) > 0
    dictionary, dataset = tiny_task.source_dictionary, tiny_task.dataset("test")
    prompts = dict(re.findall(r"^S-(\d+)\t(.*)$", result.stdout, re.M))
    hypotheses = dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", result.stdout, re.M))
    assert len(prompts) == len(hypotheses) == 30
    shortened = 0
    for index, prompt in prompts.items():
        item, words = dataset[int(index)], prompt.split()
        assert dictionary.string(item["source"]).split()[: len(words)] == words
        assert 1 + len(words) + len(item["target"]) <= 12, "<s> prompt target </s> fits"
        assert len(hypotheses[index].split()) <= 12 - 1 - len(words) - 1
        shortened += len(words) < len(item["source"]) - 1
    assert shortened == int(cut[1])


def test_truncate_source_cuts_training_pairs_instead_of_dropping_them(tiny_data, caplog):
    task = tasks.setup_task(training_cfg(tiny_data, "--max-positions", "12", "--truncate-source").task)
    with caplog.at_level(logging.WARNING):
        task.load_dataset("train")
    dataset = task.dataset("train")
    assert re.search(r"cut the prompts of \d+ of 300 pairs", caplog.text)
    assert len(dataset.ordered_indices()) == 300 and (dataset.sizes <= 12).all()
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    assert (sample["tokens"].ne(task.source_dictionary.pad()).sum(1) <= 12).all()


def test_skip_invalid_size_inputs_skips_and_counts_overlength_test_pairs(tiny_data, caplog):
    task = tasks.setup_task(training_cfg(tiny_data, "--max-positions", "12").task)
    task.load_dataset("test")
    dataset = task.dataset("test")
    too_long = int((dataset.sizes > 12).sum())
    with caplog.at_level(logging.WARNING):
        batches = task.get_batch_iterator(dataset, max_positions=12, ignore_invalid_inputs=True)
    assert f"skipped {too_long:,} examples longer than --max-positions 12" in caplog.text
    kept = [i for batch in batches.next_epoch_itr(shuffle=False) for i in batch["id"].tolist()]
    assert len(kept) == len(dataset) - too_long > 0 and (dataset.sizes[kept] <= 12).all()


def interactive_batches(task, words):
    """fairseq-interactive's batches of one raw line of ``words`` words."""
    tokens = [task.source_dictionary.encode_line(" ".join(["w1"] * words), add_if_not_exist=False).long()]
    dataset = task.build_dataset_for_inference(tokens, [t.numel() for t in tokens])
    return task.get_batch_iterator(dataset, max_positions=64).next_epoch_itr(shuffle=False)


def test_interactive_prompt_leaving_no_room_is_an_error_naming_the_flags(tiny_task):
    interactive_batches(tiny_task, 61)
    with pytest.raises(ValueError, match=r"--max-positions 64 .*\(the first, #0, has 65 tokens\).*--truncate-source"):
        interactive_batches(tiny_task, 62)


def test_interactive_prompt_is_cut_to_leave_room_with_truncate_source(tiny_data, tiny_model):
    task = tasks.setup_task(training_cfg(tiny_data, "--truncate-source").task)
    sample = next(iter(interactive_batches(task, 70)))
    assert sample["net_input"]["src_tokens"].size(1) == 62, "<s> and 61 words leave room for one token"
    generator = DiffusionGenerator(task.target_dictionary, max_iter=2, max_positions=64)
    assert len(generator.generate([tiny_model], sample)[0][0]["tokens"]) == 2


@pytest.fixture()
def data_copy(tiny_data, tmp_path):
    shutil.copytree(tiny_data, tmp_path / "bin")
    return tmp_path / "bin"


def test_checkpoint_of_another_vocabulary_size_names_both_sizes(data_copy, checkpoint, tiny_task):
    for side in ("src", "tgt"):
        with open(data_copy / f"dict.{side}.txt", "a") as f:
            f.write("extra 1\n")
    other_task = tasks.setup_task(training_cfg(data_copy).task)
    size = len(tiny_task.source_dictionary)
    with pytest.raises(ValueError, match=f"{size}-symbol dictionary, the task's dictionary has {size + 1}"):
        checkpoint_utils.load_model_ensemble([str(checkpoint)], task=other_task)


def test_checkpoint_of_another_architecture_is_rejected(tiny_data, tiny_task, tmp_path):
    cfg = parse_training_args(
        tiny_data, "--task", "translation", "-s", "src", "-t", "tgt", "--arch", "transformer",
        "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "8",
        "--decoder-embed-dim", "8", "--encoder-ffn-embed-dim", "8", "--decoder-ffn-embed-dim", "8",
        *OPTIMIZER,
    )
    path = save_checkpoint(cfg, tmp_path / "transformer.pt")
    with pytest.raises(ValueError, match="needs a diffusion_xlmr model, got transformer"):
        checkpoint_utils.load_model_ensemble([str(path)], task=tiny_task)


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_checkpoint_names_the_file(checkpoint, tiny_task, tmp_path, keep):
    data = checkpoint.read_bytes()
    truncated = tmp_path / "checkpoint_last.pt"
    truncated.write_bytes(data[: int(len(data) * keep)])
    message = rf"checkpoint {re.escape(str(truncated))} is truncated .*copy it again"
    with pytest.raises(ValueError, match=message):
        checkpoint_utils.load_model_ensemble([str(truncated)], task=tiny_task)
    with pytest.raises(ValueError, match=message):  # how fairseq-train reads --restore-file
        checkpoint_utils.load_checkpoint_to_cpu(str(truncated))
    models, _ = checkpoint_utils.load_model_ensemble([str(checkpoint)], task=tiny_task)
    assert torch.is_tensor(models[0].length_head.weight)


@pytest.mark.parametrize("where", ["flag", "file"])
def test_prompt_template_without_placeholder_names_its_origin(data_copy, where):
    if where == "file":
        (data_copy / "prompt_template.txt").write_text("Translate:\n")
        flags, origin = [], re.escape(str(data_copy / "prompt_template.txt"))
    else:
        flags, origin = ["--prompt-template", "Translate:"], "--prompt-template"
    task = tasks.setup_task(training_cfg(data_copy, *flags).task)
    with pytest.raises(ValueError, match=rf"{origin} 'Translate:' has no \{{src\}} placeholder"):
        task.build_tokenizer(None)


def test_missing_sentencepiece_model_names_the_flag_and_the_data_model(tiny_data, tiny_task, tmp_path):
    missing = tmp_path / "missing.model"
    cfg = training_cfg(tiny_data, "--bpe", "sentencepiece", "--sentencepiece-model", missing)
    expected = rf"--sentencepiece-model {re.escape(str(missing))} not found.*sentencepiece\.bpe\.model"
    with pytest.raises(FileNotFoundError, match=expected):
        tiny_task.build_bpe(cfg.bpe)
