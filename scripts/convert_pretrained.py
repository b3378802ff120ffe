#!/usr/bin/env python3
"""
Convert a pretrained masked LM into a diffusion_plugin checkpoint.

SOURCE is anything ``--pretrained-mlm`` reads (docs/PRETRAINED.md), the released
Diffusion-LLM checkpoints (``flan_v2.{base,large,xl,xxl}.length``) among them: their
length predictor becomes ``--length-predictor separate``. A checkpoint the official
code's Trainer wrote (``checkpoint-N/pytorch_model.bin`` only, or the run directory
holding ``checkpoint-N/``: its best_model_checkpoint, else the last) takes its config
and tokenizer from ``--xlmr-dir``. The model's dictionary is

- without --data, the masked LM's whole vocabulary, written to OUTDIR/dict.txt next to
  its sentencepiece model (binarize with ``scripts/prepare_prompted.py --spm-model
  OUTDIR/sentencepiece.bpe.model --dict OUTDIR/dict.txt``);
- with --data, the dictionary of that binarized data directory (``--pretrained-vocab
  prune`` unless given otherwise).

OUTDIR/checkpoint.pt is read by ``fairseq-generate --path`` and ``fairseq-train
--finetune-from-model`` (how FSDP training, ``--ddp-backend fully_sharded``, starts
from a masked LM). Other options are diffusion_xlmr model options of fairseq-train.

    python scripts/convert_pretrained.py flan_v2.xxl.length converted/xxl --arch diffusion_xlmr_xxl
"""

import argparse
import os
import shutil


def get_parser():
    parser = argparse.ArgumentParser(
        description="Convert a masked LM (fairseq, Hugging Face, released Diffusion-LLM) "
        "into a diffusion_plugin checkpoint.",
        epilog="Further options (--encoder-layers, --length-classes, --pretrained-vocab, ...) "
        "are fairseq-train's diffusion_xlmr model options.",
        allow_abbrev=False,
    )
    parser.add_argument("source", help="the masked LM: a file or directory --pretrained-mlm reads")
    parser.add_argument("outdir", help="output directory for checkpoint.pt (and dict.txt)")
    parser.add_argument(
        "--arch", required=True, help="the masked LM's size: diffusion_xlmr_{base,large,xl,xxl}"
    )
    parser.add_argument(
        "--data",
        help="binarized data directory (scripts/prepare_prompted.py) whose dictionary the "
        "model gets; default: the masked LM's whole vocabulary",
    )
    parser.add_argument(
        "--xlmr-dir",
        help="Hugging Face XLM-R directory (config.json, tokenizer files) a checkpoint of the "
        "official code's Trainer (checkpoint-N/pytorch_model.bin only) was trained from; "
        "default: SOURCE itself",
    )
    parser.add_argument("-s", "--source-lang", default="src", help="source language of --data")
    parser.add_argument("-t", "--target-lang", default="tgt", help="target language of --data")
    return parser


def implied_options(pretrained, data):
    """Model options that follow from the masked LM; options given later override them."""
    implied = [] if data else ["--pretrained-vocab", "full"]
    if not pretrained.tied:
        implied.append("--untie-weights-roberta")
    if pretrained.length_predictor is not None:
        classes = pretrained.length_predictor["length_predictor.2.weight"].size(0)
        implied += ["--length-predictor", "separate", "--length-classes", str(classes)]
    return implied


def main(argv=None):
    args, model_options = get_parser().parse_known_args(argv)
    from fairseq import models, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import diffusion_plugin
    from diffusion_plugin.pretrained import (
        DICTIONARY_FILE,
        SENTENCEPIECE_FILE,
        load_pretrained_mlm,
        read_pretrained_mlm,
        save_checkpoint,
        vocabulary_dictionary,
    )
    from diffusion_plugin.tasks.prompted_translation import PromptedTranslationTask

    pretrained = read_pretrained_mlm(args.source, args.xlmr_dir)
    os.makedirs(args.outdir, exist_ok=True)
    fairseq_argv = [
        os.path.abspath(args.data or args.outdir),
        "--user-dir", os.path.dirname(diffusion_plugin.__file__),
        "--task", "prompted_translation", "-s", args.source_lang, "-t", args.target_lang,
        "--arch", args.arch, "--pretrained-mlm", os.path.abspath(args.source),
        *implied_options(pretrained, args.data),
        *model_options,
    ]
    cfg = convert_namespace_to_omegaconf(
        options.parse_args_and_arch(options.get_training_parser(), fairseq_argv)
    )
    if args.data:
        task = tasks.setup_task(cfg.task)
    else:
        dictionary = vocabulary_dictionary(pretrained)
        dictionary.save(os.path.join(args.outdir, DICTIONARY_FILE))
        source_dir = args.xlmr_dir or (
            args.source if os.path.isdir(args.source) else os.path.dirname(args.source)
        )
        if os.path.isfile(os.path.join(source_dir, SENTENCEPIECE_FILE)):
            shutil.copyfile(
                os.path.join(source_dir, SENTENCEPIECE_FILE),
                os.path.join(args.outdir, SENTENCEPIECE_FILE),
            )
        task = PromptedTranslationTask(cfg.task, dictionary, dictionary)
    model = models.build_model(cfg.model, task)
    load_pretrained_mlm(model, pretrained, str(cfg.model.pretrained_vocab))
    checkpoint = os.path.join(args.outdir, "checkpoint.pt")
    save_checkpoint(cfg, model, checkpoint)
    print(
        f"wrote {checkpoint} ({len(task.source_dictionary)} symbols); model options for "
        f"fairseq-train --finetune-from-model: {finetune_options(args.arch, model, model_options)}"
    )
    return checkpoint


def finetune_options(arch, model, model_options):
    """The model options that rebuild the converted model (without --pretrained-mlm)."""
    needed = ["--arch", arch, *model_options]
    if not model.tied_embeddings:
        needed.append("--untie-weights-roberta")
    if model.cfg.length_predictor == "separate":
        needed += ["--length-predictor", "separate", "--length-classes", str(model.cfg.length_classes)]
    return " ".join(needed)


if __name__ == "__main__":
    main()
