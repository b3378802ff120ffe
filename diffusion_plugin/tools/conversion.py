"""Conversions of checkpoints for scripts/convert_pretrained.py (a pretrained masked LM,
the released Diffusion-LLM checkpoints among them, into a diffusion_plugin checkpoint)
and scripts/export_huggingface.py (a diffusion_plugin checkpoint into a Hugging Face
masked LM); docs/PRETRAINED.md."""

import json
import os
import shutil


def implied_options(pretrained, data):
    """Model options that follow from the masked LM; options given later override them."""
    implied = [] if data else ["--pretrained-vocab", "full"]
    if not pretrained.tied:
        implied.append("--untie-weights-roberta")
    if pretrained.length_predictor is not None:
        classes = pretrained.length_predictor["length_predictor.2.weight"].size(0)
        implied += ["--length-predictor", "separate", "--length-classes", str(classes)]
    return implied


def convert(source, outdir, arch, data=None, xlmr_dir=None, source_lang="src", target_lang="tgt",
            model_options=()):
    """Convert the masked LM ``source`` (anything ``--pretrained-mlm`` reads) into
    ``outdir``/checkpoint.pt with fairseq-train's diffusion_xlmr ``model_options``; the
    dictionary is ``data``'s, else the masked LM's whole vocabulary (written to
    ``outdir``/dict.txt with its sentencepiece model). Returns (checkpoint path, its
    dictionary size, the model options that rebuild it for fairseq-train
    --finetune-from-model)."""
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

    pretrained = read_pretrained_mlm(source, xlmr_dir)
    os.makedirs(outdir, exist_ok=True)
    fairseq_argv = [
        os.path.abspath(data or outdir),
        "--user-dir", os.path.dirname(diffusion_plugin.__file__),
        "--task", "prompted_translation", "-s", source_lang, "-t", target_lang,
        "--arch", arch, "--pretrained-mlm", os.path.abspath(source),
        *implied_options(pretrained, data),
        *model_options,
    ]
    cfg = convert_namespace_to_omegaconf(
        options.parse_args_and_arch(options.get_training_parser(), fairseq_argv)
    )
    if data:
        task = tasks.setup_task(cfg.task)
    else:
        dictionary = vocabulary_dictionary(pretrained)
        dictionary.save(os.path.join(outdir, DICTIONARY_FILE))
        source_dir = xlmr_dir or (source if os.path.isdir(source) else os.path.dirname(source))
        if os.path.isfile(os.path.join(source_dir, SENTENCEPIECE_FILE)):
            shutil.copyfile(
                os.path.join(source_dir, SENTENCEPIECE_FILE),
                os.path.join(outdir, SENTENCEPIECE_FILE),
            )
        task = PromptedTranslationTask(cfg.task, dictionary, dictionary)
    model = models.build_model(cfg.model, task)
    load_pretrained_mlm(model, pretrained, str(cfg.model.pretrained_vocab))
    checkpoint = os.path.join(outdir, "checkpoint.pt")
    save_checkpoint(cfg, model, checkpoint)
    return checkpoint, len(task.source_dictionary), finetune_options(arch, model, model_options)


def finetune_options(arch, model, model_options):
    """The model options that rebuild the converted model (without --pretrained-mlm)."""
    needed = ["--arch", arch, *model_options]
    if not model.tied_embeddings:
        needed.append("--untie-weights-roberta")
    if model.cfg.length_predictor == "separate":
        needed += ["--length-predictor", "separate", "--length-classes", str(model.cfg.length_classes)]
    return " ".join(needed)


TOKENIZER_CLASS = "PreTrainedTokenizerFast"  # reads tokenizer.json; transformers 4 and 5


def export_huggingface(checkpoint, outdir, data=None):
    """Write the checkpoint's encoder and LM head to ``outdir`` as a Hugging Face masked
    LM (``save_pretrained``), with its dictionary as dict.txt, the data's sentencepiece
    model and, where every piece of that model has a row, a tokenizer (tokenizer.json)
    whose ids are the dictionary's rows; otherwise no tokenizer, and ``AutoTokenizer``
    refuses the directory (instead of building an XLM-R tokenizer with other ids).
    OUTDIR/README.md says which. ``data``: the binarized data directory (default: the
    checkpoint's). Returns (the dictionary's size, why no tokenizer was written or None)."""
    from fairseq import checkpoint_utils

    from diffusion_plugin.pretrained import (
        DICTIONARY_FILE,
        SENTENCEPIECE_FILE,
        dictionary_tokenizer,
        to_huggingface,
    )

    overrides = {"data": os.path.abspath(data)} if data else None
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides=overrides)
    dictionary = task.source_dictionary
    hf_model = to_huggingface(models[0], dictionary)
    hf_model.config.tokenizer_class = TOKENIZER_CLASS
    hf_model.save_pretrained(outdir)
    dictionary.save(os.path.join(outdir, DICTIONARY_FILE))
    sentencepiece_model = os.path.join(cfg.task.data, SENTENCEPIECE_FILE)
    if os.path.isfile(sentencepiece_model):
        shutil.copyfile(sentencepiece_model, os.path.join(outdir, SENTENCEPIECE_FILE))
        tokenizer, reason = dictionary_tokenizer(sentencepiece_model, dictionary)
    else:
        tokenizer, reason = None, f"{sentencepiece_model} is missing"
    if tokenizer is not None:
        tokenizer.model_max_length = hf_model.config.max_position_embeddings - dictionary.pad() - 1
        tokenizer.save_pretrained(outdir)
        set_tokenizer_class(os.path.join(outdir, "tokenizer_config.json"))
    write_export_readme(checkpoint, outdir, len(dictionary), reason)
    return len(dictionary), reason


def set_tokenizer_class(tokenizer_config):
    """Name the class both transformers 4 and 5 read tokenizer.json with (5 writes its
    own name, TokenizersBackend, which 4 lacks)."""
    with open(tokenizer_config, encoding="utf-8") as config_file:
        config = json.load(config_file)
    config["tokenizer_class"] = TOKENIZER_CLASS
    with open(tokenizer_config, "w", encoding="utf-8") as config_file:
        json.dump(config, config_file, indent=2)


def write_export_readme(checkpoint, outdir, symbols, no_tokenizer_reason):
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
    with open(os.path.join(outdir, "README.md"), "w", encoding="utf-8") as readme:
        readme.write(
            f"# {os.path.basename(os.path.abspath(outdir))}\n\n"
            f"A diffusion_plugin model exported by `scripts/export_huggingface.py` from "
            f"`{checkpoint}`: a masked LM (`AutoModelForMaskedLM`) with one row per "
            f"symbol of `dict.txt` ({symbols} symbols). The length head is not exported.\n\n"
            f"{tokenizer}\n"
        )
