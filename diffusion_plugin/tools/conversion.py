"""Conversions of checkpoints for scripts/convert_pretrained.py (a pretrained masked LM,
the released Diffusion-LLM checkpoints among them, into a diffusion_plugin checkpoint)
and scripts/export_huggingface.py (a diffusion_plugin checkpoint into a Hugging Face
masked LM); docs/PRETRAINED.md."""

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


def export_huggingface(checkpoint, outdir, data=None):
    """Write the checkpoint's encoder and LM head to ``outdir`` as a Hugging Face masked
    LM (``save_pretrained``), with its dictionary as dict.txt, the data's sentencepiece
    model and, when the dictionary is that model's whole vocabulary, a transformers
    tokenizer. ``data``: the binarized data directory (default: the checkpoint's).
    Returns the dictionary's size."""
    from fairseq import checkpoint_utils
    from transformers import XLMRobertaTokenizer

    from diffusion_plugin.pretrained import DICTIONARY_FILE, SENTENCEPIECE_FILE, to_huggingface

    overrides = {"data": os.path.abspath(data)} if data else None
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides=overrides)
    dictionary = task.source_dictionary
    to_huggingface(models[0], dictionary).save_pretrained(outdir)
    dictionary.save(os.path.join(outdir, DICTIONARY_FILE))
    sentencepiece_model = os.path.join(cfg.task.data, SENTENCEPIECE_FILE)
    if os.path.isfile(sentencepiece_model):
        shutil.copyfile(sentencepiece_model, os.path.join(outdir, SENTENCEPIECE_FILE))
        tokenizer = XLMRobertaTokenizer.from_pretrained(outdir)  # from the copied model
        if tokenizer.get_vocab() == dictionary.indices:
            tokenizer.save_pretrained(outdir)
    return len(dictionary)
