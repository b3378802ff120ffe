"""Every decoding configuration that the tests exercise gives the tokens it gave when the
saved model in tests/data/golden/ was made (a tiny model trained 300 updates on the
reversal corpus), so a refactoring of the sampler that changes any output is caught.

``python tests/test_golden_decoding.py`` trains that model again and rewrites the
fixture; run it only when a change of output is intended, and say why in the commit.
Every configuration is deterministic on CPU: the random ones (stochastic strategies,
``ancestral``, ``--sampling``) decode after ``torch.manual_seed``. Not covered: the
exact prompt cache of a ``--prompt-attention prefix`` model (tests/test_speed_options.py
checks it equals the uncached decoding, which is covered here).
"""

import json
import random
import tempfile
from pathlib import Path

import pytest
import torch
from fairseq import tasks

from helpers import batch, binarize, parse_training_args, write_reversal_corpus
from diffusion_plugin.diffusion_generator import DiffusionGenerator

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
DEFAULT = "reparam-uncond-deterministic-cosine"
STRATEGY_NAMES = [
    "reparam-uncond-deterministic-cosine", "reparam-uncond-deterministic-linear",
    "reparam-cond-deterministic-cosine", "reparam-cond-deterministic-linear",
    "reparam-uncond-stochastic1.0-cosine", "reparam-uncond-stochastic2.0-linear",
    "reparam-cond-stochastic1.0-cosine", "reparam-cond-stochastic0.5-linear",
    "mask-predict", "mask-predict-cosine", "mask-predict-linear",
    "ancestral", "threshold0.05", "threshold0.5", "threshold0.9", "threshold1.0",
]
CONFIGURATIONS = {
    **{f"{name}/{steps}": dict(decoding_strategy=name, max_iter=steps, beam_size=3)
       for name in STRATEGY_NAMES for steps in (4, 10)},
    **{f"{name}+{confidence}": dict(decoding_strategy=name, unmasking_confidence=confidence,
                                    max_iter=6, beam_size=2)
       for name in ("reparam-uncond-deterministic-cosine", "reparam-cond-deterministic-linear",
                    "reparam-uncond-stochastic1.0-cosine", "threshold0.5")
       for confidence in ("margin", "entropy")},
    "window": dict(length_beam_mode="window", max_iter=5, beam_size=3),
    "oracle": dict(oracle_length=True, max_iter=5, beam_size=2),
    "samples-per-length": dict(samples_per_length=2, decoding_strategy="reparam-uncond-stochastic1.0-cosine",
                               max_iter=5, beam_size=2),
    "joint": dict(candidate_selection="joint", max_iter=5, beam_size=4),
    "mbr-bleu": dict(candidate_selection="mbr-bleu", max_iter=5, beam_size=4),
    "mbr-chrf": dict(candidate_selection="mbr-chrf", max_iter=5, beam_size=4),
    "collapse-repeats": dict(collapse_repeats=True, max_iter=3, beam_size=2),
    "guidance": dict(guidance_scale=1.0, max_iter=5, beam_size=2),
    "guidance-threshold": dict(guidance_scale=0.5, decoding_strategy="threshold0.5", max_iter=5),
    "prompt-cache": dict(prompt_cache=True, max_iter=6, beam_size=2),
    "prompt-cache-refresh2": dict(prompt_cache=True, prompt_cache_refresh=2, max_iter=6, beam_size=2),
    "prompt-cache-threshold": dict(prompt_cache=True, decoding_strategy="threshold0.5", max_iter=6),
    "sampling": dict(sampling=True, temperature=0.7, max_iter=5, beam_size=2),
    "sampling-scaled-scores": dict(sampling=True, temperature=0.7, temperature_scales_scores=True,
                                   max_iter=5, beam_size=2),
    "sampling-ancestral": dict(sampling=True, decoding_strategy="ancestral", max_iter=5, beam_size=2),
    "force-max-iter": dict(force_max_iter=True, decoding_strategy="reparam-cond-deterministic-cosine",
                           max_iter=6, beam_size=2),
    "history": dict(retain_history=True, decoding_strategy="mask-predict", max_iter=4),
    "history-threshold": dict(retain_history=True, decoding_strategy="threshold0.9", max_iter=8),
}
EXAMPLES = list(range(12))


def decode(model, task, sample, options):
    """Every sentence's candidates best-first: tokens, steps and (with --retain-iter-history)
    each step's canvas, as lists."""
    torch.manual_seed(0)
    gen = DiffusionGenerator(task.target_dictionary, max_positions=64, **options)
    return [
        [
            {"tokens": h["tokens"].tolist(), "steps": h["steps"],
             **({"history": [s["tokens"].tolist() for s in h["history"]]} if "history" in h else {})}
            for h in sentence
        ]
        for sentence in gen.generate([model], sample)
    ]


def load_golden():
    """(model, task, sample, expected outputs) of the saved fixture."""
    golden = json.loads((GOLDEN / "golden.json").read_text())
    cfg = parse_training_args(GOLDEN, *golden["args"])
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    model.load_state_dict(torch.load(GOLDEN / "model.pt", weights_only=True))
    sample = {
        "net_input": {"src_tokens": torch.tensor(golden["src_tokens"]),
                      "src_lengths": torch.tensor(golden["src_lengths"])},
        "target": torch.tensor(golden["target"]),
    }
    return model.eval(), task, sample, golden["outputs"]


@pytest.fixture(scope="module")
def golden():
    return load_golden()


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_decoding_gives_the_saved_tokens(golden, name):
    model, task, sample, outputs = golden
    assert decode(model, task, sample, CONFIGURATIONS[name]) == outputs[name]


def test_the_fixture_covers_every_configuration_and_is_small():
    saved = json.loads((GOLDEN / "golden.json").read_text())["outputs"]
    assert sorted(saved) == sorted(CONFIGURATIONS)
    assert sum(f.stat().st_size for f in GOLDEN.iterdir()) < 1_000_000


TRAINING_ARGS = [
    "--user-dir", "diffusion_plugin", "--task", "prompted_translation", "-s", "src", "-t", "tgt",
    "--arch", "diffusion_xlmr_tiny", "--encoder-layers", "2", "--encoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2", "--max-positions", "64",
    "--length-classes", "16", "--criterion", "masked_diffusion", "--dropout", "0",
    "--attention-dropout", "0",
]


def write_golden(updates=300):
    """Train the fixture's model on the reversal corpus and save it with every
    configuration's outputs."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, binary = Path(tmp, "raw"), Path(tmp, "bin")
        raw.mkdir()
        write_reversal_corpus(raw)
        binarize(raw, binary)
        cfg = parse_training_args(binary, *TRAINING_ARGS)
        task = tasks.setup_task(cfg.task)
        for split in ("train", "test"):
            task.load_dataset(split)
        torch.manual_seed(0)
        model = task.build_model(cfg.model)
        criterion = task.build_criterion(cfg.criterion)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        rng = random.Random(0)
        model.train()
        for _ in range(updates):
            loss, sample_size, _ = criterion(model, batch(task, rng.sample(range(300), 16), "train"))
            optimizer.zero_grad()
            (loss / sample_size).backward()
            optimizer.step()
        sample = batch(task, EXAMPLES)
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for side in ("src", "tgt"):
            (GOLDEN / f"dict.{side}.txt").write_text((binary / f"dict.{side}.txt").read_text())
    torch.save(model.state_dict(), GOLDEN / "model.pt")
    model.eval()
    outputs = {name: decode(model, task, sample, options) for name, options in CONFIGURATIONS.items()}
    golden = {
        "args": TRAINING_ARGS,
        "src_tokens": sample["net_input"]["src_tokens"].tolist(),
        "src_lengths": sample["net_input"]["src_lengths"].tolist(),
        "target": sample["target"].tolist(),
        "outputs": outputs,
    }
    (GOLDEN / "golden.json").write_text(json.dumps(golden, separators=(",", ":")))


if __name__ == "__main__":
    write_golden()
