"""examples/paper/train.sh: for every TASK x SIZE x GPUS its commands (DRY_RUN=1) parse with
fairseq's own parsers and hold the paper's settings (docs/METHOD.md §5, §8): the batch
per update recomputed from the printed flags, steps, the two length stages, checkpoint
selection and the evaluation rows."""

import shlex

import pytest
from fairseq import options

from helpers import run

pytestmark = pytest.mark.slow  # bash examples/paper/train.sh runs (subprocesses)

TASKS = ["iwslt14", "wmt14", "gigaword10k", "flan2022"]
SIZES = ["base", "large", "xl", "xxl"]
GPUS = [1, 2, 4, 8]
# the paper's Table 5 (tokens per update) and Table 6 (sequences per update)
PAPER_TOKENS = {"iwslt14": 32 * 1024, "wmt14": 128 * 1024, "gigaword10k": 16 * 1024}
PAPER_SEQUENCES = {"base": 512, "large": 512, "xl": 1024, "xxl": 2048}
PAPER_STEPS = {
    "iwslt14": {"base": 150000, "large": 150000, "xl": 100000, "xxl": 30000},
    "wmt14": {"base": 300000, "large": 300000, "xl": 150000, "xxl": 100000},
    "gigaword10k": {"base": 30000, "large": 10000, "xl": 5000, "xxl": 1000},
    "flan2022": {"base": 70000, "large": 30000, "xl": 17000, "xxl": 4000},
}
LENGTH_STAGE = {"task": (30000, 5e-5, 256), "flan2022": (16000, 1e-5, 256)}  # docs/METHOD.md §8
BLEU_TOKENIZER = {"iwslt14": "13a", "wmt14": "intl"}  # docs/METHOD.md §7


def dry_run(task, size, gpus, tmp_path):
    """The printed commands, comment lines left out."""
    result = run(["bash", "examples/paper/train.sh", task, size, tmp_path / "xlmr", tmp_path],
                 env={"DRY_RUN": "1", "GPUS": str(gpus)})
    return [shlex.split(line) for line in result.stdout.splitlines() if not line.startswith("#")]


def train_args(command):
    assert command[0] == "fairseq-train"
    return options.parse_args_and_arch(options.get_training_parser(), command[1:])


def generate_args(command):
    assert command[0] == "fairseq-generate"
    if ">" in command:
        command = command[: command.index(">")]
    return options.parse_args_and_arch(options.get_generation_parser(), command[1:])


def evaluate_args(command):
    """{flag: [values]} of a scripts/evaluate_instruct.py command."""
    assert command[:2] == ["python", "scripts/evaluate_instruct.py"]
    args, flag = {}, None
    for token in command[2:]:
        if token.startswith("--"):
            flag = token
            args[flag] = []
        else:
            args[flag].append(token)
    return args


def per_update(args, unit):
    """Tokens (max_tokens) or sequences (batch_size) per update over all GPUs."""
    return getattr(args, unit) * args.update_freq[0] * args.distributed_world_size


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("task", TASKS)
def test_the_paper_recipe_for_every_gpu_count(task, size, tmp_path):
    for gpus in GPUS:
        commands = dry_run(task, size, gpus, tmp_path)
        trains = [c for c in commands if c[0] == "fairseq-train"]
        assert len(trains) == 2
        stage1, stage2 = map(train_args, trains)
        assert stage1.distributed_world_size == stage2.distributed_world_size == gpus

        # stage 1: the diffusion LM, without the joint length loss
        assert stage1.criterion == "masked_diffusion" and stage1.length_loss_factor == 0
        assert stage1.max_update == PAPER_STEPS[task][size]
        assert stage1.warmup_updates == stage1.max_update // 100
        assert stage1.weight_decay == 0.01 and stage1.clip_norm == 1.0 and stage1.max_positions == 512
        assert not stage1.truncate_source  # over-long training pairs are dropped, not cut
        if task == "flan2022":
            assert per_update(stage1, "batch_size") == PAPER_SEQUENCES[size] and stage1.lr == [1e-5]
            assert stage1.disable_validation
        else:
            assert per_update(stage1, "max_tokens") == PAPER_TOKENS[task] and stage1.lr == [5e-5]
            assert stage1.max_tokens <= 4096
            metric = "rougeL" if task == "gigaword10k" else "bleu"
            assert stage1.best_checkpoint_metric == metric and stage1.maximize_best_checkpoint_metric
            assert (stage1.eval_rouge if metric == "rougeL" else stage1.eval_bleu)
            assert '"oracle_length": true' in stage1.eval_bleu_args
            assert stage1.validate_interval_updates == stage1.save_interval_updates > 0
            assert not stage1.disable_validation
        if size == "xxl":
            assert commands[0][:2] == ["python", "scripts/convert_pretrained.py"]
            assert stage1.ddp_backend == "fully_sharded" and stage1.fp16
            assert stage1.finetune_from_model.startswith(commands[0][3])
        else:
            assert stage1.bf16 and stage1.pretrained_mlm == str(tmp_path / "xlmr")
            assert stage1.pretrained_vocab == ("full" if task == "flan2022" else "prune")

        # stage 2: the separate length predictor from stage 1's selected checkpoint
        steps, lr, prompts = LENGTH_STAGE["flan2022" if task == "flan2022" else "task"]
        best = "checkpoint_last.pt" if task == "flan2022" else "checkpoint_best.pt"
        assert stage2.criterion == "length_prediction" and stage2.length_predictor == "separate"
        assert stage2.finetune_from_model == f"{stage1.save_dir}/{best}"
        assert stage2.max_update == steps and stage2.lr == [lr]
        assert per_update(stage2, "batch_size") == prompts
        assert stage2.arch == stage1.arch and stage2.untie_weights_roberta == (task != "flan2022")
        model = f"{stage2.save_dir}/{best}"

        # evaluation: length beam 10 (TyDiQA 3) and oracle length, the paper's steps
        if task == "flan2022":
            evals = [evaluate_args(c) for c in commands if c[:2] == ["python", "scripts/evaluate_instruct.py"]]
            assert all(e["--path"] == [model] and "--no-lowercase" not in e and "--max-iter" not in e for e in evals)
            rows = {(s.split("/")[0], int(e.get("--length-beam", ["0"])[0])) for e in evals for s in e["--sets"]}
            assert {("mmlu", 0), ("bbh-nlp", 0), ("mgsm", 0), ("tydiqa", 0), ("iwslt14", 0),
                    ("iwslt14", 10), ("tydiqa", 3)} == rows
        else:
            generates = [generate_args(c) for c in commands if c[0] == "fairseq-generate"]
            assert len(generates) == 2
            assert all(g.path == model and g.iter_decode_max_iter == 50 and g.gen_subset == "test" for g in generates)
            assert sorted((g.oracle_length, g.iter_decode_with_beam) for g in generates) == [(False, 10), (True, 1)]
            if task == "gigaword10k":
                assert all(g.scoring == "rouge" and g.rouge_tokenizer == "py-rouge" for g in generates)
            else:
                assert all(g.scoring == "sacrebleu" and g.sacrebleu_lowercase for g in generates)
                assert all(g.sacrebleu_tokenizer == BLEU_TOKENIZER[task] for g in generates)


def test_gpu_counts_the_batches_do_not_divide_over_are_refused(tmp_path):
    result = run(["bash", "examples/paper/train.sh", "iwslt14", "base", tmp_path, tmp_path],
                 ok=False, env={"DRY_RUN": "1", "GPUS": "3"})
    assert "GPUS=3" in result.stderr and "1, 2, 4 or 8" in result.stderr
