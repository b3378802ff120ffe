#!/usr/bin/env python3
"""
Export a diffusion_plugin checkpoint as a Hugging Face masked-LM directory.

The encoder and LM head become ``XLMRobertaForMaskedLM`` (post-LayerNorm) or
``XLMRobertaXLForMaskedLM`` (pre-LayerNorm XL/XXL) with one row per symbol of the
checkpoint's dictionary, written by ``save_pretrained``. OUTDIR also gets that
dictionary as dict.txt (the token of each row, which ``--pretrained-mlm`` reads), the
data's sentencepiece model and, where every piece of that model has a row, a tokenizer
(tokenizer.json) whose ids are the dictionary's rows: ``AutoTokenizer`` then gives the
ids fairseq gives (sentencepiece, then the dictionary). Otherwise (e.g. most BPE models,
whose intermediate pieces fairseq reads as ``<unk>``) no tokenizer is written, and
``AutoTokenizer`` refuses the directory. OUTDIR/README.md says which. The length head or
predictor has no Hugging Face counterpart and is left out.

    python scripts/export_huggingface.py checkpoints/multi30k/checkpoint_best.pt hf/multi30k \
        --data data-bin/multi30k
"""

import argparse

from diffusion_plugin.tools.conversion import export_huggingface


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
    size, no_tokenizer = export_huggingface(args.checkpoint, args.outdir, args.data)
    print(f"wrote {args.outdir} ({size} symbols; "
          f"{'tokenizer.json' if no_tokenizer is None else 'no tokenizer: ' + no_tokenizer})")


if __name__ == "__main__":
    main()
