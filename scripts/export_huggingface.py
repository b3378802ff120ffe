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
import json
import os
import shutil

TOKENIZER_CLASS = "PreTrainedTokenizerFast"  # tokenizer.json; transformers 4 and 5


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

    import diffusion_plugin  # noqa: F401  (registers the task and model)
    from diffusion_plugin.pretrained import (
        DICTIONARY_FILE,
        SENTENCEPIECE_FILE,
        dictionary_tokenizer,
        to_huggingface,
    )

    overrides = {"data": os.path.abspath(args.data)} if args.data else None
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [args.checkpoint], arg_overrides=overrides
    )
    dictionary = task.source_dictionary
    hf_model = to_huggingface(models[0], dictionary)
    # AutoTokenizer reads this class: without tokenizer.json it refuses the directory
    # instead of building an XLM-R tokenizer with other ids
    hf_model.config.tokenizer_class = TOKENIZER_CLASS
    hf_model.save_pretrained(args.outdir)
    dictionary.save(os.path.join(args.outdir, DICTIONARY_FILE))
    sentencepiece_model = os.path.join(cfg.task.data, SENTENCEPIECE_FILE)
    if os.path.isfile(sentencepiece_model):
        shutil.copyfile(sentencepiece_model, os.path.join(args.outdir, SENTENCEPIECE_FILE))
        tokenizer, reason = dictionary_tokenizer(sentencepiece_model, dictionary)
    else:
        tokenizer, reason = None, f"{sentencepiece_model} is missing"
    if tokenizer is not None:
        tokenizer.model_max_length = hf_model.config.max_position_embeddings - dictionary.pad() - 1
        tokenizer.save_pretrained(args.outdir)
        set_tokenizer_class(os.path.join(args.outdir, "tokenizer_config.json"))
    write_readme(args, len(dictionary), reason)
    print(f"wrote {args.outdir} ({len(dictionary)} symbols; "
          f"{'tokenizer.json' if tokenizer else 'no tokenizer: ' + reason})")


def set_tokenizer_class(tokenizer_config):
    """Name the class both transformers 4 and 5 read tokenizer.json with (5 writes its
    own name, TokenizersBackend, which 4 lacks)."""
    with open(tokenizer_config, encoding="utf-8") as config_file:
        config = json.load(config_file)
    config["tokenizer_class"] = TOKENIZER_CLASS
    with open(tokenizer_config, "w", encoding="utf-8") as config_file:
        json.dump(config, config_file, indent=2)


def write_readme(args, symbols, no_tokenizer_reason):
    """OUTDIR/README.md: what the export holds and how to tokenize for it."""
    if no_tokenizer_reason is None:
        tokenizer = (
            "`tokenizer.json` is the sentencepiece model re-mapped to the rows of `dict.txt`: "
            "`AutoTokenizer.from_pretrained` gives the ids fairseq gives (sentencepiece "
            "encoding, then the dictionary), with `<s>` and `</s>` around each text."
        )
    else:
        tokenizer = (
            f"No tokenizer is exported ({no_tokenizer_reason}), and `AutoTokenizer` refuses "
            "this directory. Encode text with `sentencepiece.bpe.model` "
            "(`encode(text, out_type=str)`) and take each piece's row in `dict.txt` (line n "
            "is row n + 3, after `<s> <pad> </s> <unk>`; pieces it lacks are `<unk>`, row 3), "
            "with `<s>` and `</s>` around the text."
        )
    with open(os.path.join(args.outdir, "README.md"), "w", encoding="utf-8") as readme:
        readme.write(
            f"# {os.path.basename(os.path.abspath(args.outdir))}\n\n"
            f"A diffusion_plugin model exported by `scripts/export_huggingface.py` from "
            f"`{args.checkpoint}`: a masked LM (`AutoModelForMaskedLM`) with one row per "
            f"symbol of `dict.txt` ({symbols} symbols). The length head is not exported.\n\n"
            f"{tokenizer}\n"
        )


if __name__ == "__main__":
    main()
