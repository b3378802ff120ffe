"""Bad input without a test elsewhere (docs/RELIABILITY.md lists every case): one clear
error naming the flag or file and the fix, or a counted, logged change; valid input
next to it gives the right result."""

import json
import logging
import math
import os
import re
import shutil

import pytest
import sentencepiece as spm
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.trainer import Trainer

from helpers import BIN, TASK_ARGS, TINY_ARGS, WORDS, parse_training_args, run, save_checkpoint, training_cfg
from diffusion_plugin.checkpoint_loading import CHECKSUMS_KEY, CheckpointError
from diffusion_plugin.diffusion_generator import DiffusionGenerator
from diffusion_plugin.hub_interface import from_pretrained
from diffusion_plugin.option_ranges import OPTION_RANGES, check_ranges
from diffusion_plugin.tasks.prompted_translation import DataSentencepiece, valid_utf8

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


@pytest.mark.parametrize("saved", ["with fingerprint", "before fingerprints"])
def test_checkpoint_of_another_vocabulary_size_names_both_sizes(data_copy, checkpoint, old_checkpoint, tiny_task, saved):
    for side in ("src", "tgt"):
        with open(data_copy / f"dict.{side}.txt", "a") as f:
            f.write("extra 1\n")
    other_task = tasks.setup_task(training_cfg(data_copy).task)
    size = len(tiny_task.source_dictionary)
    path = checkpoint if saved == "with fingerprint" else old_checkpoint
    message = (
        rf"{re.escape(str(path))} was trained on other data than {re.escape(str(data_copy))}: its dictionary is "
        rf"'{size} symbols, .*dict.src.txt has '{size + 1} symbols.*Use the data directory"
        if saved == "with fingerprint" else f"{size}-symbol dictionary, the task's dictionary has {size + 1}"
    )
    with pytest.raises(ValueError, match=message):
        checkpoint_utils.load_model_ensemble([str(path)], task=other_task)


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
    message = rf"checkpoint {re.escape(str(truncated))} \(.* bytes\) is (truncated|empty) .*copy it again"
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


# ---------------------------------------------------------------- data identity
@pytest.fixture(scope="module")
def old_checkpoint(checkpoint, tmp_path_factory):
    """``checkpoint`` as saved before checkpoints recorded their data fingerprint."""
    state = torch.load(checkpoint, weights_only=False)
    state["task_state"] = {}
    del state[CHECKSUMS_KEY]
    path = tmp_path_factory.mktemp("old") / "old.pt"
    torch.save(state, path)
    return path


def reordered_dictionary(data):
    """Swap two words of ``data``'s dictionary: same size, other symbols per row."""
    for side in ("src", "tgt"):
        path = data / f"dict.{side}.txt"
        lines = path.read_text().splitlines()
        lines[0], lines[1] = lines[1], lines[0]
        path.write_text("\n".join(lines) + "\n")


def test_same_size_dictionary_with_other_symbols_is_rejected(data_copy, checkpoint):
    reordered_dictionary(data_copy)
    task = tasks.setup_task(training_cfg(data_copy).task)
    with pytest.raises(ValueError, match=r"its dictionary is '38 symbols, sha256 \w+', .*dict.src.txt has '38 symbols"):
        checkpoint_utils.load_model_ensemble([str(checkpoint)], task=task)


def test_other_prompt_template_is_rejected(data_copy, checkpoint):
    (data_copy / "prompt_template.txt").write_text("Reverse: {src}\n")
    task = tasks.setup_task(training_cfg(data_copy).task)
    with pytest.raises(ValueError, match=r"its prompt template is None, .*prompt_template.txt has 'Reverse: \{src\}'"):
        checkpoint_utils.load_model_ensemble([str(checkpoint)], task=task)


def test_other_direction_is_rejected(tiny_data, checkpoint):
    task = tasks.setup_task(training_cfg(tiny_data, "-s", "tgt", "-t", "src").task)
    with pytest.raises(ValueError, match=r"its direction is 'src->tgt', -s tgt -t src has 'tgt->src'"):
        checkpoint_utils.load_model_ensemble([str(checkpoint)], task=task)


def test_prompted_data_read_in_reverse_is_rejected(data_copy):
    (data_copy / "prompt_template.txt").write_text("Reverse: {src}\n")
    with pytest.raises(ValueError, match=r"holds prompted src->tgt data .*reads it in reverse: pass -s src -t tgt"):
        tasks.setup_task(training_cfg(data_copy, "-s", "tgt", "-t", "src").task)
    tasks.setup_task(training_cfg(data_copy).task)  # the direction it was binarized in


def test_checkpoint_without_fingerprint_loads_with_a_warning(tiny_task, old_checkpoint, checkpoint, caplog):
    with caplog.at_level(logging.WARNING):
        old, _ = checkpoint_utils.load_model_ensemble([str(old_checkpoint)], task=tiny_task)
    assert f"{old_checkpoint} records no fingerprint of the data" in caplog.text
    new, _ = checkpoint_utils.load_model_ensemble([str(checkpoint)], task=tiny_task)
    assert all(torch.equal(a, b) for a, b in zip(old[0].state_dict().values(), new[0].state_dict().values()))


# -------------------------------------------------------------------- damage
def test_saved_checkpoints_carry_checksums_of_every_tensor(checkpoint):
    state = torch.load(checkpoint, weights_only=False)
    assert set(state[CHECKSUMS_KEY]) >= {f"model.{name}" for name in state["model"]}


def overwrite_bytes(path, tensor, count=256):
    """Write ``count`` bytes of 0xFF into the file where ``tensor``'s data lies."""
    data = bytearray(path.read_bytes())
    offset = data.find(tensor.numpy().tobytes()[:64])
    assert offset > 0
    data[offset + 8: offset + 8 + count] = b"\xff" * count
    path.write_bytes(bytes(data))


def test_bytes_written_over_a_tensor_are_detected(checkpoint, tiny_task, tmp_path):
    damaged = tmp_path / "damaged.pt"
    shutil.copy(checkpoint, damaged)
    overwrite_bytes(damaged, torch.load(checkpoint, weights_only=False)["model"]["encoder.sentence_encoder.embed_tokens.weight"])
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(damaged))} .* (is damaged|cannot be read)"):
        checkpoint_utils.load_model_ensemble([str(damaged)], task=tiny_task)


def test_changed_optimizer_state_is_detected(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=False)
    state["last_optimizer_state"]["state"] = {0: {"exp_avg": torch.ones(3)}}
    state[CHECKSUMS_KEY]["optimizer.state.0.exp_avg"] = 0
    torch.save(state, tmp_path / "changed.pt")
    with pytest.raises(CheckpointError, match=r"is damaged: 1 tensor\(s\) differ from the checksums saved with it \(optimizer.state.0.exp_avg\)"):
        checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "changed.pt"))


def test_nan_weights_without_checksums_are_refused(old_checkpoint, tiny_task, tmp_path):
    state = torch.load(old_checkpoint, weights_only=False)
    state["model"]["encoder.lm_head.bias"][3] = math.nan
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"hold NaN or Inf \(model.encoder.lm_head.bias\)"):
        checkpoint_utils.load_model_ensemble([str(tmp_path / "nan.pt")], task=tiny_task)


@pytest.mark.parametrize("content", [os.urandom(5000), b"hello, this is text\n", b"PK\x03\x04" + b"\0" * 50])
def test_a_file_that_is_no_checkpoint_is_named(content, tiny_task, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(path))} \(.* bytes\) is (not a checkpoint|truncated)"):
        checkpoint_utils.load_model_ensemble([str(path)], task=tiny_task)


def test_truncated_checkpoint_in_the_legacy_format_is_named(checkpoint, tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(checkpoint, weights_only=False), legacy, _use_new_zipfile_serialization=False)
    assert checkpoint_utils.load_checkpoint_to_cpu(str(legacy))["model"]
    legacy.write_bytes(legacy.read_bytes()[:-2000])
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(legacy))} .* cannot be read by torch.load"):
        checkpoint_utils.load_checkpoint_to_cpu(str(legacy))


def test_truncated_last_checkpoint_names_the_newest_intact_one(checkpoint, tmp_path):
    older, newer = tmp_path / "checkpoint_1_10.pt", tmp_path / "checkpoint_1_20.pt"
    shutil.copy(checkpoint, older)
    shutil.copy(checkpoint, newer)
    os.utime(older, (1, 1))
    last = tmp_path / "checkpoint_last.pt"
    last.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=rf"is truncated .*--restore-file {re.escape(str(newer))};"):
        checkpoint_utils.load_checkpoint_to_cpu(str(last))


# ------------------------------------------------------------- resuming (fairseq-train)
def resume(data, save_dir, *flags, cwd=None):
    """The extra state of fairseq-train's resume step (checkpoint_utils.load_checkpoint)
    run in the folder ``cwd``."""
    cfg = training_cfg(data, *OPTIMIZER, "--save-dir", save_dir, *flags)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    here = os.getcwd()
    os.chdir(cwd or here)
    try:
        return checkpoint_utils.load_checkpoint(cfg.checkpoint, trainer)[0]
    finally:
        os.chdir(here)


def test_relative_restore_file_is_read_from_the_current_folder_or_named(tiny_data, checkpoint, tmp_path):
    save_dir = tmp_path / "save"
    save_dir.mkdir()
    shutil.copy(checkpoint, save_dir / "checkpoint_1_20.pt")
    with pytest.raises(FileNotFoundError, match=rf"--restore-file checkpoint_1_20.pt not found .*pass --restore-file {re.escape(str(save_dir / 'checkpoint_1_20.pt'))}"):
        resume(tiny_data, save_dir, "--restore-file", "checkpoint_1_20.pt", cwd=tmp_path)
    assert resume(tiny_data, save_dir, "--restore-file", "save/checkpoint_1_20.pt", cwd=tmp_path) is not None


def test_resuming_with_other_data_is_rejected_and_fine_tuning_checks_the_dictionary_only(data_copy, checkpoint, tmp_path):
    (data_copy / "prompt_template.txt").write_text("Reverse: {src}\n")
    save_dir = tmp_path / "save"
    save_dir.mkdir()
    shutil.copy(checkpoint, save_dir / "checkpoint_last.pt")
    with pytest.raises(ValueError, match=r"checkpoint_last.pt was trained on other data .*its prompt template is None"):
        resume(data_copy, save_dir)
    assert resume(data_copy, tmp_path / "new", "--finetune-from-model", checkpoint) is not None
    reordered_dictionary(data_copy)
    with pytest.raises(ValueError, match="its dictionary is"):
        resume(data_copy, tmp_path / "new2", "--finetune-from-model", checkpoint)


def test_training_set_dropped_entirely_names_the_flags(tiny_data):
    task = tasks.setup_task(training_cfg(tiny_data, "--max-positions", "5").task)
    task.load_dataset("train")
    with pytest.raises(ValueError, match=r"no training pair fits --max-positions 5: the shortest of the 300 pairs has \d+ tokens.*--truncate-source"):
        task.get_batch_iterator(task.dataset("train"), max_positions=5, ignore_invalid_inputs=True)
    task = tasks.setup_task(training_cfg(tiny_data).task)
    task.load_dataset("train")
    with pytest.raises(ValueError, match=r"no training pair fits --max-positions 64 and --max-tokens 4: .*raise --max-tokens"):
        task.get_batch_iterator(task.dataset("train"), max_tokens=4, max_positions=4, ignore_invalid_inputs=True)


# ---------------------------------------------------------------- interactive input
@pytest.fixture(scope="module")
def data_with_sentencepiece(tiny_data, tmp_path_factory):
    directory = tmp_path_factory.mktemp("spm") / "bin"
    shutil.copytree(tiny_data, directory)
    text = directory / "words.txt"
    text.write_text("\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))) + "\n")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(directory / "sentencepiece.bpe"),
                                   vocab_size=40, hard_vocab_limit=False, minloglevel=2)
    return directory


def test_interactive_uses_the_data_sentencepiece_model_without_bpe(data_with_sentencepiece, tiny_data):
    task = tasks.setup_task(training_cfg(data_with_sentencepiece).task)
    bpe = task.build_bpe(None)
    assert isinstance(bpe, DataSentencepiece)
    assert bpe.decode("\u2581w 1") == "\u2581w 1", "fairseq-generate (nothing encoded) prints pieces as they are"
    pieces = bpe.encode("w1 w2")
    assert "\u2581" in pieces and bpe.decode(pieces) == "w1 w2"
    assert bpe.decode("w1 w2") == "w1 w2", "text --post-process already decoded stays"
    assert tasks.setup_task(training_cfg(tiny_data).task).build_bpe(None) is None


def test_python_interface_uses_the_same_sentencepiece_model(data_with_sentencepiece, checkpoint):
    hub = from_pretrained(str(checkpoint.parent), checkpoint.name, data_name_or_path=str(data_with_sentencepiece))
    assert isinstance(hub.bpe, DataSentencepiece)
    assert hub.bpe.decode("\u2581w 1 \u2581w 2") == "w1 w2", "decodes token lists before encoding any text"
    assert len(hub.generate(["w1 w2"], iter_decode_max_iter=2)[0]) == 1


def test_input_that_is_not_utf8_is_named():
    line = b"Hallo \xe4 Welt\n".decode("utf-8", "surrogateescape")  # how stdin reads it under C.UTF-8
    with pytest.raises(ValueError, match=r"is not valid UTF-8 \(byte 0xe4 at character 6\); re-encode"):
        valid_utf8(line)
    assert valid_utf8("Hallo ä Welt") == "Hallo ä Welt"


# ---------------------------------------------------------------- the Python interface
@pytest.fixture(scope="module")
def hub(checkpoint, tiny_data):
    return from_pretrained(str(checkpoint.parent), checkpoint.name, data_name_or_path=str(tiny_data))


def test_hub_decodes_a_list_of_prompts(hub):
    results = hub.generate(["reverse : w1 w2 =", "reverse : w3 ="], iter_decode_max_iter=2, iter_decode_with_beam=2)
    assert len(results) == 2 and all(len(candidates) == 2 for candidates in results)
    assert all(isinstance(c["text"], str) and c["steps"] <= 2 for candidates in results for c in candidates)
    assert hub.translate("reverse : w1 w2 =", iter_decode_max_iter=2) == hub.translate(["reverse : w1 w2 ="], iter_decode_max_iter=2)[0]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda hub: hub.generate("Hallo."), r"takes a list of prompts, got a single str: pass \[prompt\]"),
        (lambda hub: hub.generate(["w1"], iter_decode_max_iters=1), r"unknown option\(s\) iter_decode_max_iters; the decoding options are .*iter_decode_max_iter"),
        (lambda hub: hub.generate(["w1"], beam=5), r"beam=5\): diffusion decoding has no beam search; the length beam is iter_decode_with_beam=5"),
        (lambda hub: hub.generate(["w1"], iter_decode_max_iter=0), r"--iter-decode-max-iter 0 is out of range: give a value in \[1, inf\)"),
    ],
)
def test_hub_refuses_misuse(hub, call, message):
    with pytest.raises(ValueError, match=message):
        call(hub)


def test_hub_relative_data_path_is_read_from_the_current_folder_then_the_checkpoint_folder(checkpoint, tiny_data, tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(checkpoint, model_dir / "checkpoint_best.pt")
    shutil.copytree(tiny_data, tmp_path / "data-bin")
    monkeypatch.chdir(tmp_path)
    assert from_pretrained("model", data_name_or_path="./data-bin").task.cfg.data == str(tmp_path / "data-bin")
    shutil.copytree(tiny_data, model_dir / "own")
    assert from_pretrained("model", data_name_or_path="own").task.cfg.data == str(model_dir / "own")
    with pytest.raises(FileNotFoundError, match=r"data_name_or_path='./missing': no such directory \(looked for .*/missing and .*/model/missing\)"):
        from_pretrained("model", data_name_or_path="./missing")


# --------------------------------------------------------------------- option ranges
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num-diffusion-steps", "0"], r"--num-diffusion-steps 0 is out of range: give a value in \[1, inf\)"),
        (["--guidance-scale", "-1"], r"--guidance-scale -1.0 is out of range: give a value in \[0, inf\)"),
        (["--samples-per-length", "0"], r"--samples-per-length 0 is out of range"),
        (["--prompt-cache-refresh", "-2"], r"--prompt-cache-refresh -2 is out of range"),
        (["--max-positions", "1"], r"--max-positions 1 is out of range: give a value in \[2, inf\)"),
        (["--eval-bleu-args", '{"iter_decode_max_iters": 10}'], r"--eval-bleu-args .*unknown option\(s\) iter_decode_max_iters; the decoding options are .*iter_decode_max_iter"),
        (["--label-smoothing", "1.5"], r"--label-smoothing 1.5 is out of range: give a value in \[0, 1\)"),
        (["--label-smoothing", "-0.1"], r"--label-smoothing -0.1 is out of range"),
        (["--dropout", "1.0"], r"--dropout 1.0 is out of range: give a value in \[0, 1\)"),
        (["--length-classes", "0"], r"--length-classes 0 is out of range"),
    ],
)
def test_bad_options_name_their_flag_and_range(tiny_data, flags, message):
    """fairseq-train builds the task, the model and the criterion; one of them refuses."""
    cfg = training_cfg(tiny_data, *flags)
    with pytest.raises(ValueError, match=message):
        task = tasks.setup_task(cfg.task)
        task.build_model(cfg.model)
        task.build_criterion(cfg.criterion)


def test_valid_eval_bleu_args_are_accepted(tiny_data):
    args = '{"iter_decode_max_iter": 10, "iter_decode_with_beam": 3, "oracle_length": true}'
    assert json.loads(tasks.setup_task(training_cfg(tiny_data, "--eval-bleu-args", args).task).cfg.eval_bleu_args)


def test_every_range_accepts_its_ends_and_refuses_beyond():
    for name, allowed in OPTION_RANGES.items():
        inside = allowed.low + (1e-3 if allowed.low_open else 0)
        check_ranges({name: inside})
        with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} "):
            check_ranges({name: allowed.low - (0 if allowed.low_open else 1e-3)})


def test_window_length_beam_is_capped_by_the_positions(tiny_task):
    dictionary = tiny_task.target_dictionary
    with pytest.raises(ValueError, match=r"--iter-decode-with-beam 1000 with --length-beam-mode window .*give a value in \[1, 62\]"):
        DiffusionGenerator(dictionary, beam_size=1000, max_positions=64, length_beam_mode="window")
    assert DiffusionGenerator(dictionary, beam_size=62, max_positions=64, length_beam_mode="window").beam_size == 62


def test_sampling_needs_no_other_flag(tiny_data):
    parser = options.get_generation_parser()
    args = options.parse_args_and_arch(parser, [str(tiny_data), *TASK_ARGS, "--path", "x.pt", "--sampling"])
    cfg = convert_namespace_to_omegaconf(args)
    assert cfg.generation.sampling and cfg.generation.nbest == cfg.generation.beam == 1


# ----------------------------------------------------------------- the commands themselves
@pytest.mark.slow
def test_commands_stop_on_bad_files_and_sample_without_extra_flags(tiny_data, data_with_sentencepiece, checkpoint, tmp_path):
    not_a_checkpoint = tmp_path / "model.pt"
    not_a_checkpoint.write_bytes(os.urandom(4000))
    result = generate(tiny_data, not_a_checkpoint, ok=False)
    assert re.search(rf"CheckpointError: checkpoint {re.escape(str(not_a_checkpoint))} .* is not a checkpoint", result.stderr.strip().splitlines()[-1])
    sampled = [generate(tiny_data, checkpoint, "--sampling").stdout for _ in range(2)]
    assert len(re.findall(r"^H-\d+", sampled[0], re.M)) == 30
    assert sampled[0] == sampled[1], "without --seed, fairseq seeds with its default, 1"
    save_dir = tmp_path / "save"
    result = run(
        [BIN / "fairseq-train", tiny_data, *TINY_ARGS, *OPTIMIZER, "--save-dir", save_dir,
         "--restore-file", "checkpoint_1_20.pt", "--max-update", "2", "--batch-size", "8", "--num-workers", "0", "--cpu"],
        ok=False,
    )
    assert "--restore-file checkpoint_1_20.pt not found" in result.stderr.strip().splitlines()[-1]
    assert not save_dir.exists() or not list(save_dir.glob("*.pt")), "nothing trained from update 0"
    result = run(
        [BIN / "fairseq-train", tiny_data, *TINY_ARGS, *OPTIMIZER, "--save-dir", save_dir, "--max-tokens", "6",
         "--max-update", "2", "--num-workers", "0", "--cpu"],
        ok=False,
    )
    assert re.search(r"ValueError: no training pair fits --max-positions 64 and --max-tokens 6: .*raise --max-tokens",
                     result.stderr.strip().splitlines()[-1])
    lines = tmp_path / "lines.txt"
    lines.write_bytes(b"w1 w2\nw3 \xe4 w4\n")
    with open(lines, "rb") as stdin:
        result = run(
            [BIN / "fairseq-interactive", data_with_sentencepiece, *TASK_ARGS, "--path", checkpoint,
             "--iter-decode-max-iter", "2"],
            ok=False, stdin=stdin, env={"LC_ALL": "C.UTF-8"},
        )
    last = result.stderr.strip().splitlines()[-1]
    assert re.search(r"ValueError: input line 'w3 .* is not valid UTF-8 \(byte 0xe4 at character 3\); re-encode", last)
