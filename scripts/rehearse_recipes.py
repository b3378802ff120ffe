#!/usr/bin/env python3
"""
Rehearse the paper recipe on CPU at tiny size: every command examples/paper/train.sh
prints, for iwslt14, wmt14, gigaword10k and flan2022, then the XXL path up to the step
that needs CUDA.

1. a tiny XLM-R (2 layers x 32, one sentencepiece model) made here and saved in fairseq's
   format (``xlmr/``: model.pt of fairseq-train --task masked_lm, dict.txt,
   sentencepiece.bpe.model) and in Hugging Face's (``xlmr-hf/``, and ``xlmr-xl-hf/``
   pre-LayerNorm for XXL) by transformers' save_pretrained;
2. tiny corpora (the first lines of ../shared/data) where examples/paper/prepare_TASK.sh
   expects its downloads, which are stubbed; then the prepare script itself;
3. ``DRY_RUN=1 GPUS=1 bash examples/paper/train.sh TASK base XLMR WORKDIR``: stage 1, stage 2
   and the evaluation rows, each command run with only the changes in CHANGES; the score
   lines are printed;
4. ``train.sh iwslt14 xxl XLMR_XL``: the conversion, then stage 1 from the converted
   checkpoint (--finetune-from-model) with FSDP and fp16 replaced by --cpu.

    python scripts/rehearse_recipes.py --workdir work/rehearsal

With ``--device cuda`` (``scripts/gpu_check.py --recipe``) the precision and FSDP flags stay
as printed, GPUS is the number of GPUs (1, 2, 4 or 8), and the XXL path runs to the end:
stage 1 and stage 2 under FSDP with --fp16, and its evaluation.
"""

import argparse
import glob
import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TASKS = {"iwslt14": "xlmr", "wmt14": "xlmr-hf", "gigaword10k": "xlmr-hf", "flan2022": "xlmr"}
SHAPE = ["--encoder-layers", "2", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
         "--encoder-attention-heads", "2"]
FLAN_FILES = [  # scripts/download_flan_2022.sh's names
    "cot_fs_opt_train", "cot_zs_opt_train", "dialog_fs_opt_train", "dialog_zs_opt_train",
    "flan_fs_noopt_train", "flan_fs_opt_train_part1", "flan_fs_opt_train_part2",
    "flan_fs_opt_train_part3", "flan_zs_noopt_train", "flan_zs_opt_train", "niv2_fs_opt_train",
    "niv2_zs_opt_train", "t0_fs_noopt_train", "t0_zs_noopt_train", "t0_zs_opt_train",
]
INSTRUCT_SETS = ["mmlu/0-shot", "bbh-nlp/0-shot", "mgsm/0-shot", "tydiqa/0-shot", "iwslt14/0-shot"]
# the split directories whose files stand in for the official test/ (MMLU, IWSLT14)
OFFICIAL_TEST_SPLITS = ("val", "validation")
# every change made to the recipe's commands, with its reason
CHANGES = [
    ("MMLU and IWSLT14 test/ files are copies of the shared val/ and validation/ files",
     "the shared data holds no test splits; the recipe evaluates the paper's test splits"),
    ("GPUS=1 (--distributed-world-size 1); with --device cuda the number of GPUs", "one CPU process"),
    (f"the model shape {' '.join(SHAPE)} appended to fairseq-train and convert_pretrained.py",
     "the tiny XLM-R's size"),
    ("--bf16 replaced by --cpu; XXL: --ddp-backend fully_sharded --fp16 replaced by --cpu",
     "fairseq's --bf16 needs CUDA or XLA, its --fp16 optimizer and FSDP need CUDA"),
    ("fairseq-generate gets --cpu (its --fp16 is kept: half decoding runs on CPU)", "the device"),
    ("--max-update 8 (stage 1), 4 (stage 2), 2 (XXL); --warmup-updates 1; "
     "--validate-interval-updates and --save-interval-updates 4", "steps"),
    ("--max-tokens 1024, --batch-size 4, --update-freq 1", "batch sizes"),
    ("fairseq-generate --iter-decode-max-iter 4; evaluate_instruct.py --max-iter 2", "steps"),
    ("prepare_flan2022.sh EXAMPLES 200; the corpora are the first lines of ../shared/data",
     "corpus sizes"),
]
VALUES = {"--warmup-updates": "1", "--validate-interval-updates": "4",
          "--save-interval-updates": "4", "--max-tokens": "1024", "--batch-size": "4",
          "--update-freq": "1", "--iter-decode-max-iter": "4"}


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(), allow_abbrev=False)
    parser.add_argument("--workdir", type=Path, required=True, help="output directory (made anew)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the shared corpora (iwslt14/, wmt14/, gigaword/, instruct/)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS),
                        help="tasks to rehearse")
    parser.add_argument("--no-xxl", action="store_true", help="leave out the XXL path")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: keep the recipe's precision and FSDP flags (CUDA GPUs)")
    return parser


def environment():
    """The venv's commands first, this checkout's diffusion_plugin, one thread."""
    path = os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=path,
                OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def execute(command, log, stdout=None):
    """Run ``command`` in the repository root, its output in ``log`` (its stdout in the
    file ``stdout`` if given); exit with the log's tail if it fails. Returns the stdout."""
    print("+", shlex.join(command) + (f" > {stdout}" if stdout else ""), flush=True)
    if stdout:  # train.sh makes WORKDIR/eval when it runs the commands itself
        Path(stdout).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as log_file, open(stdout or os.devnull, "w") as out_file:
        code = subprocess.call(command, cwd=REPO, env=environment(), stdout=out_file if stdout else log_file,
                               stderr=log_file if stdout else subprocess.STDOUT)
    if code != 0:
        tail = "\n".join(Path(log).read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"{command[0]} failed (exit {code}); last lines of {log}:\n{tail}")
    return Path(stdout or log).read_text(errors="replace")


def head(path, count):
    with open(path, encoding="utf-8") as f:
        return [next(f) for _ in range(count)]


def write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")


# ------------------------------------------------------------------ corpora
def write_corpora(work, data):
    """The tiny corpora, where each prepare script finds its (stubbed) downloads."""
    sizes = {"train": 160, "valid": 16, "test": 16}
    # (task directory, fairseq's preparation script, its output, shared corpus, heldout file, languages)
    translation = [
        ("iwslt14", "prepare-iwslt14.sh", "iwslt14.tokenized.de-en", "iwslt14", "valid", ("de", "en")),
        ("wmt14", "prepare-wmt14en2de.sh", "wmt14_en_de", "wmt14", "newstest2013.tok", ("en", "de")),
    ]
    for directory, script, output, corpus, heldout, langs in translation:
        for split, count in sizes.items():
            source = "train_sample" if split == "train" else heldout
            skip = sizes["valid"] if split == "test" else 0
            for lang in langs:
                lines = head(data / corpus / f"{source}.{lang}", skip + count)[skip:]
                write(work / directory / output / "tmp" / f"{split}.{lang}", lines)
        write(work / directory / script, ["exit 0  # rehearsal: the corpus is already in tmp/\n"])
    giga = work / "gigaword"
    org = giga / "org_data"
    offset = 0
    for split, name in (("train", "train"), ("valid", "dev"), ("test", "test")):
        for side in ("src", "tgt"):
            lines = head(data / "gigaword" / f"test.{side}", offset + sizes[split])[offset:]
            write(org / f"{name}.{side}.txt", lines)
        offset += sizes[split]
    with tarfile.open(giga / "summary.tar.gz", "w:gz") as archive:
        archive.add(org, arcname="org_data")
    shutil.rmtree(org)
    flan = work / "flan_2022"
    flan.mkdir(parents=True)
    de, en = head(data / "iwslt14" / "train_sample.de", 40), head(data / "iwslt14" / "train_sample.en", 40)
    for index, name in enumerate(FLAN_FILES):
        with gzip.open(flan / f"{name}.jsonl.gz", "wt", encoding="utf-8") as f:
            for i in range(index, index + 10):
                f.write(json.dumps({"inputs": f"Translate to English: {de[i].strip()}",
                                    "targets": en[i].strip()}) + "\n")
    for name in INSTRUCT_SETS:  # the official data/instruct layout, 2 examples per file
        for path in sorted(glob.glob(str(data / "instruct" / name / "**" / "*.jsonl"), recursive=True)):
            relative = Path(path).relative_to(data / "instruct")
            write(work / "instruct" / relative, head(path, 2))
            split = relative.parts[2] if len(relative.parts) > 3 else None
            if split in OFFICIAL_TEST_SPLITS:  # the shared data has no test splits
                test = Path(*relative.parts[:2], "test", *relative.parts[3:])
                write(work / "instruct" / test, head(path, 2))
    return [line for path in glob.glob(str(work / "**" / "tmp" / "train.*"), recursive=True)
            for line in open(path, encoding="utf-8")] + en + de


# ------------------------------------------------------------------ tiny XLM-R
def make_xlmr(work, text):
    """One sentencepiece model; the tiny XLM-R in fairseq's and Hugging Face's formats."""
    import sentencepiece as spm
    import torch
    import transformers
    from fairseq.data import Dictionary

    spm_dir = work / "spm"
    spm_dir.mkdir()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_prefix=str(spm_dir / "sentencepiece.bpe"),
        vocab_size=400, hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )
    model_file = spm_dir / "sentencepiece.bpe.model"
    processor = spm.SentencePieceProcessor(model_file=str(model_file))
    pieces = Dictionary()  # XLM-R's dict.txt: <s> <pad> </s> <unk>, the pieces (no <mask>)
    for piece_id in range(3, processor.get_piece_size()):
        pieces.add_symbol(processor.id_to_piece(piece_id))

    fairseq_dir = work / "xlmr"  # model.pt of a 3-update fairseq masked LM
    fairseq_dir.mkdir()
    pieces.save(str(fairseq_dir / "dict.txt"))
    shutil.copy(model_file, fairseq_dir)
    mono = work / "masked_lm"
    write(mono / "train.txt", [" ".join(processor.encode(line, out_type=str)) + "\n" for line in text[:400]])
    execute([str(BIN / "fairseq-preprocess"), "--only-source", "--srcdict", str(fairseq_dir / "dict.txt"),
             "--trainpref", str(mono / "train.txt"), "--destdir", str(mono / "data-bin")], mono / "preprocess.log")
    execute([str(BIN / "fairseq-train"), str(mono / "data-bin"), "--task", "masked_lm",
             "--criterion", "masked_lm", "--arch", "roberta", *SHAPE, "--tokens-per-sample", "512",
             "--sample-break-mode", "complete", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "8",
             "--max-update", "3", "--disable-validation", "--save-dir", str(mono / "checkpoints"),
             "--no-epoch-checkpoints", "--cpu"], mono / "train.log")
    shutil.copy(mono / "checkpoints" / "checkpoint_last.pt", fairseq_dir / "model.pt")

    torch.manual_seed(0)
    tokenizer = transformers.XLMRobertaTokenizer(vocab_file=str(model_file))
    for name, config_class, model_class in (
        ("xlmr-hf", transformers.XLMRobertaConfig, transformers.XLMRobertaForMaskedLM),
        ("xlmr-xl-hf", transformers.XLMRobertaXLConfig, transformers.XLMRobertaXLForMaskedLM),
    ):
        config = config_class(
            vocab_size=len(pieces) + 1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
            pad_token_id=1, bos_token_id=0, eos_token_id=2,
        )
        model_class(config).save_pretrained(work / name)
        tokenizer.save_pretrained(work / name)
        shutil.copy(model_file, work / name)


# ------------------------------------------------------------------ the recipe
def recipe(task, size, xlmr, work, gpus):
    """The commands ``DRY_RUN=1 GPUS=gpus train.sh`` prints: (tokens, stdout file or None)."""
    env = dict(environment(), DRY_RUN="1", GPUS=str(gpus))
    printed = subprocess.run(["bash", "examples/paper/train.sh", task, size, str(xlmr), str(work)],
                             cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout
    commands = []
    for line in printed.splitlines():
        if line.startswith("#"):
            continue
        tokens = shlex.split(line)
        redirect = tokens[tokens.index(">") + 1] if ">" in tokens else None
        commands.append((tokens[: tokens.index(">")] if redirect else tokens, redirect))
    return commands


def adapt(tokens, max_update, device):
    """The command with CHANGES applied (on ``cuda``, the precision and device ones left out)."""
    tokens = list(tokens)
    for flag, value in VALUES.items():
        if flag in tokens:
            tokens[tokens.index(flag) + 1] = value
    if tokens[0] == "fairseq-train":
        tokens[tokens.index("--max-update") + 1] = str(max_update)
        if device == "cpu":
            if "--ddp-backend" in tokens:
                del tokens[tokens.index("--ddp-backend"): tokens.index("--ddp-backend") + 2]
            tokens = [t for t in tokens if t not in ("--bf16", "--fp16")] + ["--cpu"]
        tokens += SHAPE
    elif tokens[0] == "fairseq-generate" and device == "cpu":
        tokens.append("--cpu")
    elif tokens[:2] == ["python", "scripts/convert_pretrained.py"]:
        tokens += SHAPE
    elif tokens[:2] == ["python", "scripts/evaluate_instruct.py"]:
        tokens += ["--max-iter", "2"]
    if tokens[0].startswith("fairseq-"):
        tokens[0] = str(BIN / tokens[0])
    elif tokens[0] == "python":
        tokens[0] = sys.executable
    return tokens


def prepare(task, xlmr, work, logs):
    command = ["bash", f"examples/paper/prepare_{task}.sh", str(xlmr), str(work)]
    execute(command + (["200"] if task == "flan2022" else []), logs / f"prepare_{task}.log")


def score_lines(tokens, output):
    """The score lines of an evaluation command's output (none for other commands)."""
    lines = [line for line in output.splitlines() if line.strip()]
    if tokens[0] == "tail":
        return lines[-1:]
    if tokens[1:2] == ["scripts/evaluate_instruct.py"]:
        return [line for line in lines if re.search(r" on \d+ examples of \d+ files?$", line)]
    return []


def rehearse(task, size, xlmr, work, logs, device, gpus):
    """Every command of train.sh TASK SIZE, adapted; returns the score lines."""
    scores = []
    for index, (tokens, redirect) in enumerate(recipe(task, size, xlmr, work, gpus)):
        max_update = (4 if "length_prediction" in tokens else 8) if tokens[0] == "fairseq-train" else None
        output = execute(adapt(tokens, max_update, device), logs / f"{task}.{size}.{index}.log", redirect)
        scores += [f"{task} {size}: {line}" for line in score_lines(tokens, output)]
    print(*scores, sep="\n", flush=True)
    return scores


def rehearse_xxl_on_cpu(work, logs):
    """iwslt14 at XXL: the conversion, then stage 1 from the converted checkpoint."""
    commands = recipe("iwslt14", "xxl", work / "xlmr-xl-hf", work, 1)
    assert commands[0][0][:2] == ["python", "scripts/convert_pretrained.py"]
    execute(adapt(commands[0][0], None, "cpu"), logs / "iwslt14.xxl.convert.log")
    stage1 = commands[1][0]
    assert "--finetune-from-model" in stage1 and "fully_sharded" in stage1
    execute(adapt(stage1, 2, "cpu"), logs / "iwslt14.xxl.stage1.log")
    print("iwslt14 xxl: converted, and trained from the converted checkpoint; FSDP with --fp16 "
          "(and the XXL stage 2 and evaluation under it) needs CUDA: scripts/gpu_check.py --recipe",
          flush=True)


def main(argv=None):
    args = get_parser().parse_args(argv)
    work = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    logs = work / "logs"
    logs.mkdir(parents=True)
    print("changes to the recipe's commands:", *(f"  {what} ({why})" for what, why in CHANGES), sep="\n")
    text = write_corpora(work, args.data.resolve())
    make_xlmr(work, text)
    gpus = 1
    if args.device == "cuda":
        import torch

        gpus = max(g for g in (1, 2, 4, 8) if g <= max(torch.cuda.device_count(), 1))
    scores = []
    for task in args.tasks:
        xlmr = work / TASKS[task]
        prepare(task, xlmr, work, logs)
        scores += rehearse(task, "base", xlmr, work, logs, args.device, gpus)
    if not args.no_xxl and "iwslt14" in args.tasks:
        if args.device == "cuda":
            scores += rehearse("iwslt14", "xxl", work / "xlmr-xl-hf", work, logs, "cuda", gpus)
        else:
            rehearse_xxl_on_cpu(work, logs)
    return scores


if __name__ == "__main__":
    main()
