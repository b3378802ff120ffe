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

from diffusion_plugin.tools.conversion import convert


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


def main(argv=None):
    args, model_options = get_parser().parse_known_args(argv)
    checkpoint, symbols, finetune = convert(args.source, args.outdir, args.arch, args.data, args.xlmr_dir,
                                            args.source_lang, args.target_lang, model_options)
    print(f"wrote {checkpoint} ({symbols} symbols); model options for fairseq-train --finetune-from-model: "
          f"{finetune}")
    return checkpoint


if __name__ == "__main__":
    main()
