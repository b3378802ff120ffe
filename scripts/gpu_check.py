#!/usr/bin/env python3
"""
Check the FSDP path on the CUDA GPUs of this machine, end to end.

Makes a small synthetic corpus (scripts/make_synthetic_corpus.py, binarized by
scripts/prepare_prompted.py), trains ``diffusion_xlmr_large`` on it (about 300M
parameters with the corpus's small vocabulary) for a few updates with
``fairseq-train --ddp-backend fully_sharded --bf16-autocast --checkpoint-activations``
on every visible GPU, saves, reloads the checkpoint with ``fairseq-generate`` and
decodes the test set, then prints the peak GPU memory of the training (fairseq's
``gb_free`` = total - torch.cuda.max_memory_allocated, logged every update) next to
scripts/plan_memory.py's estimate for the same setup (without its fixed overhead,
which max_memory_allocated does not see).

    python scripts/gpu_check.py --workdir work/gpu_check

``--recipe`` runs instead every command of examples/paper/train.sh for the four tasks at
tiny size, with its precision and FSDP flags as printed, and the XXL path to the end
(``scripts/rehearse_recipes.py --device cuda``; CPU CI runs the same with --cpu).
"""

import argparse
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import torch

from diffusion_plugin.tools import memory_plan

REPO = Path(__file__).resolve().parents[1]

BLEU_RE = re.compile(r"BLEU4? = ([\d.]+)")


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     allow_abbrev=False)
    parser.add_argument("--workdir", type=Path, default=REPO / "work" / "gpu_check",
                        help="output directory for the corpus, checkpoints and logs")
    parser.add_argument("--arch", default="diffusion_xlmr_large", choices=memory_plan.ARCHS,
                        help="architecture to train")
    parser.add_argument("--updates", type=int, default=20, help="training updates")
    parser.add_argument("--max-tokens", type=int, default=4096, help="tokens per GPU per batch")
    parser.add_argument("--gpus", type=int, default=None,
                        help="GPUs to train on (default: all visible)")
    parser.add_argument("--recipe", action="store_true",
                        help="run the paper recipe's commands at tiny size instead (see above)")
    return parser


def run(cmd, log_path):
    """Run cmd with its output in log_path; exit with the log's tail if it fails."""
    print("+", " ".join(map(str, cmd)), flush=True)
    with open(log_path, "w") as out:
        code = subprocess.call([str(part) for part in cmd], stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        tail = "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"{cmd[0]} failed (exit {code}); last lines of {log_path}:\n{tail}")
    return Path(log_path).read_text(errors="replace")


def console_script(name):
    return str(Path(sys.executable).parent / name)


def main(argv=None):
    args = get_parser().parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit(
            "scripts/gpu_check.py needs a CUDA GPU: torch.cuda.is_available() is False "
            f"(torch {torch.__version__}). Run it on a machine with CUDA GPUs and a CUDA build of torch."
        )
    if args.recipe:
        import rehearse_recipes

        rehearse_recipes.main(["--workdir", str(args.workdir.resolve() / "recipe"), "--device", "cuda"])
        return
    gpus = args.gpus or torch.cuda.device_count()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    raw, data, save = work / "raw", work / "data-bin", work / "checkpoints"

    run([sys.executable, REPO / "scripts" / "make_synthetic_corpus.py", "--outdir", raw,
         "--train", "4000", "--valid", "100", "--test", "100"], work / "corpus.log")
    run([sys.executable, REPO / "scripts" / "prepare_prompted.py", "--source-lang", "src",
         "--target-lang", "tgt", "--trainpref", raw / "train", "--validpref", raw / "valid",
         "--testpref", raw / "test", "--template", "{src} =", "--vocab-size", "1000",
         "--destdir", data, "--force"], work / "prepare.log")

    task = ["--user-dir", REPO / "diffusion_plugin", "--task", "prompted_translation",
            "-s", "src", "-t", "tgt"]
    train_log = run([
        console_script("fairseq-train"), data, *task, "--arch", args.arch,
        "--criterion", "masked_diffusion", "--ddp-backend", "fully_sharded",
        "--distributed-world-size", str(gpus), "--bf16-autocast", "--checkpoint-activations",
        "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "1e-4",
        "--lr-scheduler", "fixed", "--clip-norm", "1.0", "--max-tokens", str(args.max_tokens),
        "--max-update", str(args.updates), "--disable-validation", "--log-format", "json",
        "--log-interval", "1", "--save-dir", save, "--no-epoch-checkpoints",
        "--save-interval-updates", str(args.updates), "--required-batch-size-multiple", "1",
    ], work / "train.log")
    updates = [json.loads(line.split("| train_inner | ", 1)[1])
               for line in train_log.splitlines() if "| train_inner | " in line]
    if not updates:
        raise SystemExit(f"no update logged in {work / 'train.log'}")
    total_gib = torch.cuda.get_device_properties(0).total_memory / 1024**3
    peak_gib = total_gib - min(float(update["gb_free"]) for update in updates)
    losses = [float(update["loss"]) for update in updates]

    generate_log = run([
        console_script("fairseq-generate"), data, *task, "--path", save / "checkpoint_last.pt",
        "--gen-subset", "test", "--batch-size", "32", "--iter-decode-max-iter", "5",
        "--iter-decode-with-beam", "3", "--model-overrides", str({"bf16_autocast": True}),
        "--required-batch-size-multiple", "1",
    ], work / "generate.log")
    hypotheses = sum(line.startswith("D-") for line in generate_log.splitlines())
    bleu = BLEU_RE.search(generate_log)

    dictionary_size = sum(1 for _ in open(data / "dict.src.txt", encoding="utf-8")) + 4
    plan = memory_plan.plan(args.arch, memory_plan.MemorySetup(
        vocab_size=dictionary_size, gpus=gpus, ddp_backend="fully_sharded", precision="bf16",
        checkpoint_activations=True, max_tokens=args.max_tokens, overhead_gib=0, gpu_memory=round(total_gib, 1),
    ))
    print(
        f"\nGPU: {torch.cuda.get_device_name(0)} x {gpus} ({total_gib:.1f} GiB each), "
        f"torch {torch.__version__}\n"
        f"{args.arch}: {plan['params'] / 1e6:.1f}M parameters, {len(updates)} FSDP updates "
        f"in bf16 (--bf16-autocast) with activation checkpointing, loss {losses[0]:.3f} -> "
        f"{losses[-1]:.3f}\n"
        f"decoded {hypotheses} test sentences from the saved checkpoint"
        f"{f', BLEU {bleu.group(1)}' if bleu else ''}\n"
        f"peak GPU memory (rank 0, max_memory_allocated): {peak_gib:.2f} GiB; "
        f"planner estimate without overhead: {plan['gib']['total']:.2f} GiB "
        f"(parameters {plan['gib']['parameters']:.2f}, gradients {plan['gib']['gradients']:.2f}, "
        f"optimizer {plan['gib']['optimizer']:.2f}, gathered {plan['gib']['gathered']:.2f}, "
        f"activations {plan['gib']['activations']:.2f})"
    )
    if hypotheses != 100 or not all(map(math.isfinite, losses)):
        raise SystemExit("the check failed: non-finite loss or missing hypotheses (see the logs)")


if __name__ == "__main__":
    main()
