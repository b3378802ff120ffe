"""The prompted_translation task: dictionaries, concatenated samples, length filtering."""

import logging
import shutil

import pytest
import torch
from fairseq import tasks

from helpers import binarize, training_cfg, write_reversal_corpus


def test_samples_concatenate_prompt_and_target(tiny_task):
    dataset = tiny_task.dataset("valid")
    sample = dataset.collater([dataset[i] for i in range(5)])
    dictionary = tiny_task.source_dictionary
    for row in range(5):
        item = dataset[int(sample["id"][row])]
        prompt = sample["net_input"]["src_tokens"][row]
        prompt = prompt[prompt.ne(dictionary.pad())]
        assert prompt[0] == dictionary.bos()
        assert torch.equal(prompt[1:], item["source"][:-1])
        full = sample["tokens"][row][sample["tokens"][row].ne(dictionary.pad())]
        assert torch.equal(full, torch.cat([prompt, item["target"]]))
        assert full[-1] == dictionary.eos()
        target_positions = sample["target_mask"][row].nonzero().view(-1)
        assert torch.equal(sample["tokens"][row, target_positions], item["target"])
        assert dataset.size(int(sample["id"][row])) == len(full)
    assert sample["ntokens"] == int(sample["target"].ne(dictionary.pad()).sum())


def test_training_drops_and_counts_overlength_pairs(tiny_data, caplog):
    cfg = training_cfg(tiny_data, "--max-positions", "12")
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    dataset = task.dataset("train")
    too_long = int((dataset.sizes > 12).sum())
    assert 0 < too_long < len(dataset)
    with caplog.at_level(logging.WARNING):
        kept = dataset.ordered_indices()
    assert len(kept) == len(dataset) - too_long
    assert (dataset.sizes[kept] <= 12).all()
    assert f"dropped {too_long:,} of {len(dataset):,} pairs longer than --max-positions 12" in caplog.text


def test_validation_overlength_is_an_error_naming_the_flag(tiny_data):
    cfg = training_cfg(tiny_data, "--max-positions", "12")
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    with pytest.raises(Exception, match="skip-invalid-size-inputs-valid-test"):
        task.get_batch_iterator(task.dataset("valid"), max_tokens=1000, max_positions=task.max_positions())


@pytest.fixture()
def data_copy(tiny_data, tmp_path):
    copy = tmp_path / "bin"
    shutil.copytree(tiny_data, copy)
    return copy


def test_dictionary_without_mask_is_rejected(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_reversal_corpus(raw, sizes=(("train", 20), ("valid", 5), ("test", 5)))
    data = binarize(raw, tmp_path / "bin", with_mask=False)
    with pytest.raises(ValueError, match=r"dict\.src\.txt has no <mask> symbol"):
        tasks.setup_task(training_cfg(data).task)


def test_different_source_and_target_dictionaries_are_rejected(data_copy):
    with open(data_copy / "dict.tgt.txt", "a") as f:
        f.write("extra 1\n")
    with pytest.raises(ValueError, match=r"dict\.src\.txt and .*dict\.tgt\.txt differ.*--joined-dictionary"):
        tasks.setup_task(training_cfg(data_copy).task)


def test_missing_dictionary_names_the_file(data_copy):
    (data_copy / "dict.tgt.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"dict\.tgt\.txt not found"):
        tasks.setup_task(training_cfg(data_copy).task)


def test_unknown_decoding_strategy_is_rejected(tiny_data):
    with pytest.raises(ValueError, match="--decoding-strategy"):
        tasks.setup_task(training_cfg(tiny_data, "--decoding-strategy", "greedy").task)


def test_batches_use_the_concatenated_length_and_keep_every_eval_example(tiny_task):
    dataset = tiny_task.dataset("test")
    iterator = tiny_task.get_batch_iterator(
        dataset, max_tokens=100, max_positions=64, required_batch_size_multiple=8
    ).next_epoch_itr(shuffle=False)
    seen = []
    for batch in iterator:
        assert batch["tokens"].numel() <= 100
        seen += batch["id"].tolist()
    assert sorted(seen) == list(range(len(dataset)))


def test_eval_bleu_and_eval_rouge_share_one_decoding_of_each_validation_batch(tiny_data):
    import sacrebleu
    from fairseq import metrics as fairseq_metrics

    from diffusion_plugin.diffusion_generator import DiffusionGenerator
    from diffusion_plugin.metrics import rouge

    cfg = training_cfg(tiny_data, "--eval-bleu", "--eval-rouge", "--eval-bleu-args", '{"iter_decode_max_iter": 2}')
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    torch.manual_seed(0)
    model = task.build_model(cfg.model).eval()
    criterion = task.build_criterion(cfg.criterion)
    calls, decoded = [], []
    generate = DiffusionGenerator.generate

    def counted(self, models, sample, **kwargs):
        calls.append(sample["id"].tolist())
        hypos = generate(self, models, sample, **kwargs)
        decoded.extend(task.tgt_dict.string(h[0]["tokens"]) for h in hypos)
        return hypos

    DiffusionGenerator.generate = counted
    try:
        batches = task.get_batch_iterator(task.dataset("valid"), max_sentences=8).next_epoch_itr(shuffle=False)
        with fairseq_metrics.aggregate() as aggregated:
            logs = [task.valid_step(sample, model, criterion)[2] for sample in batches]
            task.reduce_metrics(logs, criterion)
    finally:
        DiffusionGenerator.generate = generate
    assert len(calls) == len(logs) == 4 and sorted(sum(calls, [])) == list(range(30))  # each example once
    refs = [task.tgt_dict.string(task.dataset("valid")[i]["target"]) for i in sum(calls, [])]
    values = aggregated.get_smoothed_values()
    # both scores are of that one decoding: sacreBLEU 13a (smooth exp) and py-rouge ROUGE-L, lower-cased
    assert values["bleu"] == pytest.approx(round(sacrebleu.corpus_bleu(decoded, [refs], tokenize="13a").score, 2))
    assert values["rougeL"] == pytest.approx(round(rouge(decoded, refs)["rougeL"], 2))


def test_a_validation_metric_is_one_table_entry_selected_by_eval_metrics(tiny_data, monkeypatch):
    from fairseq import metrics as fairseq_metrics

    from diffusion_plugin.scoring import VALIDATION_METRICS, ValidationMetric, statistic_key

    def words(hyps, refs, cfg):
        return {"hyp": sum(len(h.split()) for h in hyps), "ref": sum(len(r.split()) for r in refs)}

    monkeypatch.setitem(VALIDATION_METRICS, "length_ratio", ValidationMetric(
        ("length_ratio",), words, lambda sums: {"length_ratio": 100 * sums["hyp"] / sums["ref"]}))
    cfg = training_cfg(tiny_data, "--eval-metrics", "length_ratio", "--eval-bleu-args", '{"iter_decode_max_iter": 1}')
    task = tasks.setup_task(cfg.task)
    assert task.validation_metrics == ["length_ratio"]
    task.load_dataset("valid")
    torch.manual_seed(0)
    model = task.build_model(cfg.model).eval()
    criterion = task.build_criterion(cfg.criterion)
    batches = task.get_batch_iterator(task.dataset("valid"), max_sentences=8).next_epoch_itr(shuffle=False)
    with fairseq_metrics.aggregate() as aggregated:
        logs = [task.valid_step(sample, model, criterion)[2] for sample in batches]
        task.reduce_metrics(logs, criterion)
    hyp, ref = (sum(log[statistic_key("length_ratio", key)] for log in logs) for key in ("hyp", "ref"))
    assert ref == sum(len(task.dataset("valid")[i]["target"]) - 1 for i in range(30))  # without </s>
    values = aggregated.get_smoothed_values()
    assert values["length_ratio"] == pytest.approx(round(100 * hyp / ref, 2))
    assert "bleu" not in values and "rougeL" not in values


def test_an_unknown_validation_metric_is_rejected_naming_the_known_ones(tiny_data):
    with pytest.raises(ValueError, match=r"--eval-metrics 'bleu,meteor': unknown meteor; choose from bleu, rouge"):
        tasks.setup_task(training_cfg(tiny_data, "--eval-metrics", "bleu,meteor").task)
