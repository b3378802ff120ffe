"""diffusion_plugin/lm_eval.py: the lm-evaluation-harness model on a tiny reversal model
trained here until it is accurate (a few hundred updates)."""

import json
import random
import re
import sys

import lm_eval
import pytest
import torch
from fairseq import tasks
from fairseq.trainer import Trainer
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager
from lm_eval.utils import make_table

from diffusion_plugin.lm_eval import DiffusionLM, cut_at_stop
from helpers import BIN, TASK_ARGS, WORDS, binarize, run, training_cfg, write_reversal_corpus

UPDATES = 600
MODEL = ["--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(raw corpus, data directory, checkpoint) of a tiny model trained UPDATES updates."""
    raw = tmp_path_factory.mktemp("raw")
    write_reversal_corpus(raw, sizes=(("train", 600), ("valid", 20), ("test", 40)), seed=3)
    data = binarize(raw, tmp_path_factory.mktemp("bin"))
    cfg = training_cfg(data, *MODEL, "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "32", "--seed", "1")
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    torch.manual_seed(1)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    updates = 0
    while updates < UPDATES:
        batches = task.get_batch_iterator(task.dataset("train"), max_sentences=32, seed=updates).next_epoch_itr(shuffle=True)
        for sample in batches:
            trainer.train_step([sample])
            updates += 1
            if updates == UPDATES:
                break
    checkpoint = tmp_path_factory.mktemp("checkpoints") / "checkpoint.pt"
    trainer.consolidate_optimizer()
    trainer.save_checkpoint(str(checkpoint), {})
    return raw, data, checkpoint


def reversal_pairs(raw):
    sources = (raw / "test.src").read_text().splitlines()
    targets = (raw / "test.tgt").read_text().splitlines()
    return sources, targets


def corrupted(target, rng):
    """``target`` with one word replaced by another word of the vocabulary."""
    words = target.split()
    position = rng.randrange(len(words))
    words[position] = rng.choice([w for w in WORDS if w != words[position]])
    return " ".join(words)


def requests(kind, arguments):
    return [Instance(request_type=kind, doc={}, arguments=args, idx=0) for args in arguments]


def test_loglikelihood_prefers_the_reference_and_does_not_depend_on_the_batch(trained):
    raw, data, checkpoint = trained
    sources, targets = reversal_pairs(raw)
    rng = random.Random(0)
    arguments = [(s, " " + t) for s, t in zip(sources, targets)]
    arguments += [(s, " " + corrupted(t, rng)) for s, t in zip(sources, targets)]
    one = DiffusionLM(path=str(checkpoint), data=str(data), batch_size=1, mc_samples=16, greedy_check=False)
    eight = DiffusionLM(path=str(checkpoint), data=str(data), batch_size=8, mc_samples=16, greedy_check=False)
    single = [score for score, _ in one.loglikelihood(requests("loglikelihood", arguments))]
    batched = [score for score, _ in eight.loglikelihood(requests("loglikelihood", list(reversed(arguments))))]
    torch.testing.assert_close(torch.tensor(single), torch.tensor(batched[::-1]), atol=1e-4, rtol=0)
    reference, wrong = single[: len(sources)], single[len(sources):]
    preferred = sum(r > w for r, w in zip(reference, wrong))
    assert preferred >= 0.9 * len(sources), f"the reference won {preferred} of {len(sources)}"
    other_seed = DiffusionLM(path=str(checkpoint), data=str(data), mc_samples=16, seed=1, greedy_check=False)
    assert other_seed.loglikelihood(requests("loglikelihood", arguments[:1]))[0][0] != single[0]
    without_length = DiffusionLM(path=str(checkpoint), data=str(data), mc_samples=16, length_logprob=False,
                                 greedy_check=False)
    assert without_length.loglikelihood(requests("loglikelihood", arguments[:1]))[0][0] > single[0]


def test_is_greedy_is_true_exactly_for_the_decoded_continuation(trained):
    raw, data, checkpoint = trained
    sources, _ = reversal_pairs(raw)
    lm = DiffusionLM(path=str(checkpoint), data=str(data), batch_size=4, steps=4, canvas=3)
    decoded = lm.generate_until(requests("generate_until", [(s, {"until": ["\n"]}) for s in sources[:6]]))
    assert all(len(text.split()) == 3 for text in decoded), "a fixed canvas of 3 tokens"
    steps_four = DiffusionLM(path=str(checkpoint), data=str(data), batch_size=4, steps=4, mc_samples=2)
    results = steps_four.loglikelihood(requests("loglikelihood", [(s, " " + d) for s, d in zip(sources, decoded)]))
    assert all(greedy for _, greedy in results)
    rng = random.Random(1)
    results = steps_four.loglikelihood(requests("loglikelihood", [(s, " " + corrupted(d, rng)) for s, d in zip(sources, decoded)]))
    assert not any(greedy for _, greedy in results)


@pytest.mark.slow
def test_generate_until_equals_fairseq_generate(trained):
    raw, data, checkpoint = trained
    sources, _ = reversal_pairs(raw)
    options = ["--iter-decode-max-iter", "4", "--iter-decode-with-beam", "2", "--decoding-strategy", "threshold0.8"]
    result = run([BIN / "fairseq-generate", data, *TASK_ARGS, "--path", checkpoint, "--gen-subset", "test",
                  "--batch-size", "16", *options])
    expected = dict(re.findall(r"^D-(\d+)\t\S+\t(.*)$", result.stdout, re.M))
    lm = DiffusionLM(path=str(checkpoint), data=str(data), batch_size=5, steps=4, length_beam=2,
                     decoding_strategy="threshold0.8")
    outputs = lm.generate_until(requests("generate_until", [(s, {"until": ["\n"]}) for s in sources]))
    assert len(expected) == len(sources)
    assert outputs == [expected[str(i)] for i in range(len(sources))]


def write_tasks(directory, sources, targets):
    """A generation task and a multiple-choice task (lm-eval YAML over JSON lines)."""
    rng = random.Random(2)
    with open(directory / "reverse.jsonl", "w") as f:
        for source, target in zip(sources, targets):
            f.write(json.dumps({"src": source, "tgt": target, "choices": [target, corrupted(target, rng)], "label": 0}) + "\n")
    common = (
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {directory / 'reverse.jsonl'}\n"
        "test_split: test\n"
        "doc_to_text: '{{src}}'\n"
    )
    (directory / "reverse_generate.yaml").write_text(
        "task: reverse_generate\n" + common + "output_type: generate_until\ndoc_to_target: '{{tgt}}'\n"
        "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 16\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (directory / "reverse_choice.yaml").write_text(
        "task: reverse_choice\n" + common + "output_type: multiple_choice\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{label}}'\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )


def test_simple_evaluate_runs_a_generation_and_a_multiple_choice_task(trained, tmp_path, capsys):
    raw, data, checkpoint = trained
    sources, targets = reversal_pairs(raw)
    write_tasks(tmp_path, sources[:12], targets[:12])
    model_args = f"path={checkpoint},data={data},steps=4,mc_samples=8,greedy_check=false"
    results = lm_eval.simple_evaluate(
        model="diffusion_plugin", model_args=model_args, tasks=["reverse_generate", "reverse_choice"],
        batch_size=4, task_manager=TaskManager(include_path=str(tmp_path)), log_samples=True,
    )
    print(make_table(results))
    table = capsys.readouterr().out
    assert re.search(r"\|reverse_choice\s*\|.*\|acc\s*\|", table) and "reverse_generate" in table
    assert results["results"]["reverse_choice"]["acc,none"] >= 0.9
    lm = DiffusionLM(path=str(checkpoint), data=str(data), steps=4)
    outputs = lm.generate_until(requests("generate_until", [(s, {"until": ["\n"], "max_gen_toks": 16}) for s in sources[:12]]))
    exact = sum(o == t for o, t in zip(outputs, targets[:12])) / 12
    assert results["results"]["reverse_generate"]["exact_match,none"] == pytest.approx(exact)
    logged = [sample["resps"][0][0] for sample in results["samples"]["reverse_generate"]]
    assert sorted(logged) == sorted(outputs)


@pytest.mark.slow
def test_command_line_runs_lm_evals_interface(trained, tmp_path):
    raw, data, checkpoint = trained
    sources, targets = reversal_pairs(raw)
    write_tasks(tmp_path, sources[:8], targets[:8])
    result = run([sys.executable, "-m", "diffusion_plugin.lm_eval", "--model_args",
                  f"path={checkpoint},data={data},steps=4,mc_samples=4", "--tasks", "reverse_choice",
                  "--include_path", tmp_path, "--batch_size", "4"])
    assert re.search(r"\|reverse_choice\s*\|.*\|acc\s*\|", result.stdout)


def test_refusals_and_stop_sequences(trained):
    raw, data, checkpoint = trained
    lm = DiffusionLM(path=str(checkpoint), data=str(data))
    with pytest.raises(NotImplementedError, match="loglikelihood_rolling .* not defined"):
        lm.loglikelihood_rolling(requests("loglikelihood_rolling", [("w1 w2",)]))
    with pytest.raises(ValueError, match="decoding_stategy not understood"):
        DiffusionLM(path=str(checkpoint), data=str(data), decoding_stategy="threshold0.9")
    with pytest.raises(ValueError, match="needs data=DATA_DIR"):
        DiffusionLM(path=str(checkpoint))
    assert cut_at_stop("w1 w2. w3\nw4", [".", "\n"]) == "w1 w2"
    assert cut_at_stop("w1 w2", "w2") == "w1 "
