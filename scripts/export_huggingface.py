#!/usr/bin/env python3
"""
Export a diffusion_plugin checkpoint as a Hugging Face masked-LM directory.

The encoder and LM head become ``XLMRobertaForMaskedLM`` (post-LayerNorm) or
``XLMRobertaXLForMaskedLM`` (pre-LayerNorm XL/XXL) with one row per symbol of the
checkpoint's dictionary, written by ``save_pretrained``. OUTDIR also gets that
dictionary as dict.txt (the token of each row, which ``--pretrained-mlm`` reads) and
the data's sentencepiece model; when the dictionary is that model's whole XLM-R
vocabulary, a transformers tokenizer as well. The length head or predictor has no
Hugging Face counterpart and is left out.

    python scripts/export_huggingface.py checkpoints/multi30k/checkpoint_best.pt hf/multi30k \
        --data data-bin/multi30k
"""

import argparse
import os
import shutil


def get_parser():
    parser = argparse.ArgumentParser(
        description="Export a diffusion_plugin checkpoint as a Hugging Face masked LM."
    )
    parser.add_argument("checkpoint", help="diffusion_plugin checkpoint (.pt)")
    parser.add_argument("outdir", help="output directory (config.json, model.safetensors, dict.txt)")
    parser.add_argument(
        "--data",
        help="binarized data directory with the checkpoint's dictionary (default: the one "
        "it was trained on)",
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    from fairseq import checkpoint_utils
    from transformers import XLMRobertaTokenizer

    import diffusion_plugin  # noqa: F401  (registers the task and model)
    from diffusion_plugin.pretrained import DICTIONARY_FILE, SENTENCEPIECE_FILE, to_huggingface

    overrides = {"data": os.path.abspath(args.data)} if args.data else None
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [args.checkpoint], arg_overrides=overrides
    )
    dictionary = task.source_dictionary
    to_huggingface(models[0], dictionary).save_pretrained(args.outdir)
    dictionary.save(os.path.join(args.outdir, DICTIONARY_FILE))
    sentencepiece_model = os.path.join(cfg.task.data, SENTENCEPIECE_FILE)
    if os.path.isfile(sentencepiece_model):
        shutil.copyfile(sentencepiece_model, os.path.join(args.outdir, SENTENCEPIECE_FILE))
        tokenizer = XLMRobertaTokenizer.from_pretrained(args.outdir)  # from the copied model
        if tokenizer.get_vocab() == dictionary.indices:
            tokenizer.save_pretrained(args.outdir)
    print(f"wrote {args.outdir} ({len(dictionary)} symbols)")


if __name__ == "__main__":
    main()
