"""
Pretrained masked LMs into and out of ``diffusion_xlmr`` (docs/METHOD.md §1, §5, §8).

:func:`read_pretrained_mlm` reads, for ``--pretrained-mlm PATH``:

- a fairseq checkpoint file of a RoBERTa / XLM-R masked LM (``fairseq-train --task
  masked_lm``), with ``dict.txt`` next to it or in its training data directory;
- a fairseq XLM-R directory (``model.pt``, ``dict.txt``, ``sentencepiece.bpe.model``);
- a Hugging Face XLM-R or XLM-R-XL directory (``config.json``, ``model.safetensors`` or
  ``pytorch_model.bin``, tokenizer files);
- a released Diffusion-LLM directory (``flan_v2.*.length``): ``pytorch_model.bin`` with the
  Hugging Face weights under ``model.`` and the ``length_trm`` / ``length_predictor``
  modules, tokenizer files;
- a checkpoint the official code's Hugging Face ``Trainer`` wrote: ``checkpoint-N/`` with
  that ``pytorch_model.bin`` only, or the run directory holding ``checkpoint-N/``
  directories (:func:`trainer_checkpoint`); the config and tokenizer come from the
  XLM-R directory it was trained from (``vocabulary_dir``).

Each becomes the parameters of fairseq's ``RobertaEncoder`` and the token string of
every embedding row. :func:`load_pretrained_mlm` copies them into a model, the rows
chosen by the strings of the task dictionary; :func:`to_huggingface` goes back.
"""

import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from fairseq.data import Dictionary
from torch import Tensor

from diffusion_plugin.constants import MASK_SYMBOL

logger = logging.getLogger(__name__)

DICTIONARY_FILE = "dict.txt"
SENTENCEPIECE_FILE = "sentencepiece.bpe.model"
RELEASED_WEIGHTS_FILE = "pytorch_model.bin"
RELEASED_MLM_PREFIX = "model."
RELEASED_LENGTH_PREFIXES = ("length_trm.", "length_predictor.")
TRAINER_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE_FILE = "trainer_state.json"
TOKENIZER_FILES = (DICTIONARY_FILE, SENTENCEPIECE_FILE, "tokenizer.json", "tokenizer_config.json")

EMBEDDINGS = "sentence_encoder.embed_tokens.weight"
POSITIONS = "sentence_encoder.embed_positions.weight"
OUTPUT_WEIGHT = "lm_head.weight"
OUTPUT_BIAS = "lm_head.bias"
VOCABULARY_ROWS = (EMBEDDINGS, OUTPUT_WEIGHT, OUTPUT_BIAS)
PRE_LN_FINAL_NORM = "sentence_encoder.layer_norm.weight"

# (Hugging Face prefix, RobertaEncoder prefix); "#" stands for a layer number.
HF_NAMES = [
    ("roberta.embeddings.word_embeddings.", "sentence_encoder.embed_tokens."),
    ("roberta.embeddings.position_embeddings.", "sentence_encoder.embed_positions."),
    ("roberta.encoder.layer.#.attention.self.query.", "sentence_encoder.layers.#.self_attn.q_proj."),
    ("roberta.encoder.layer.#.attention.self.key.", "sentence_encoder.layers.#.self_attn.k_proj."),
    ("roberta.encoder.layer.#.attention.self.value.", "sentence_encoder.layers.#.self_attn.v_proj."),
    ("roberta.encoder.layer.#.attention.output.dense.", "sentence_encoder.layers.#.self_attn.out_proj."),
    ("roberta.encoder.layer.#.intermediate.dense.", "sentence_encoder.layers.#.fc1."),
    ("roberta.encoder.layer.#.output.dense.", "sentence_encoder.layers.#.fc2."),
    ("lm_head.dense.", "lm_head.dense."),
    ("lm_head.layer_norm.", "lm_head.layer_norm."),
    ("lm_head.decoder.weight", OUTPUT_WEIGHT),
    ("lm_head.bias", OUTPUT_BIAS),
]
# post-LayerNorm XLM-R base / large (XLMRobertaForMaskedLM)
HF_POST_LN_NAMES = [
    ("roberta.embeddings.LayerNorm.", "sentence_encoder.layernorm_embedding."),
    ("roberta.encoder.layer.#.attention.output.LayerNorm.", "sentence_encoder.layers.#.self_attn_layer_norm."),
    ("roberta.encoder.layer.#.output.LayerNorm.", "sentence_encoder.layers.#.final_layer_norm."),
]
# pre-LayerNorm XLM-R XL / XXL (XLMRobertaXLForMaskedLM)
HF_PRE_LN_NAMES = [
    ("roberta.encoder.layer.#.attention.self_attn_layer_norm.", "sentence_encoder.layers.#.self_attn_layer_norm."),
    ("roberta.encoder.layer.#.LayerNorm.", "sentence_encoder.layers.#.final_layer_norm."),
    ("roberta.encoder.LayerNorm.", "sentence_encoder.layer_norm."),
]
HF_TOKEN_TYPES = "roberta.embeddings.token_type_embeddings.weight"
HF_OUTPUT_BIAS_COPY = "lm_head.decoder.bias"
HF_UNUSED_PREFIXES = (
    "roberta.embeddings.position_ids",
    "roberta.embeddings.token_type_ids",
    "roberta.pooler.",
    HF_OUTPUT_BIAS_COPY,
)


@dataclass
class PretrainedMLM:
    """A masked LM as fairseq ``RobertaEncoder`` parameters and the token of each row."""

    source: str
    state: Dict[str, Tensor]  # RobertaEncoder parameter names -> tensors
    symbols: List[Optional[str]]  # token of embedding row i (None: unnamed row)
    length_predictor: Optional[Dict[str, Tensor]] = None  # LengthPredictor parameters

    @property
    def tied(self) -> bool:
        """Whether the LM head's projection is the input embedding."""
        output, embeddings = self.state.get(OUTPUT_WEIGHT), self.state.get(EMBEDDINGS)
        return output is not None and embeddings is not None and torch.equal(output, embeddings)


# ------------------------------------------------------------------------- reading
def read_pretrained_mlm(path: str, vocabulary_dir: Optional[str] = None) -> PretrainedMLM:
    """Read the masked LM at ``path`` (any format listed in the module docstring);
    ``vocabulary_dir``: the Hugging Face XLM-R directory whose config and tokenizer
    belong to a released or Trainer checkpoint (default: the checkpoint's directory)."""
    if os.path.isfile(path):
        return read_fairseq(path)
    if os.path.isfile(os.path.join(path, "model.pt")):
        return read_fairseq(os.path.join(path, "model.pt"))
    path = trainer_checkpoint(path)
    released = read_released_state(path)
    if released is not None:
        return from_released_state(path, released, vocabulary_dir)
    if os.path.isfile(os.path.join(path, "config.json")):
        return read_huggingface(path)
    raise FileNotFoundError(
        f"--pretrained-mlm {path}: expected a fairseq checkpoint file, a fairseq XLM-R "
        "directory (model.pt, dict.txt), a Hugging Face directory (config.json with "
        f"model.safetensors or pytorch_model.bin) or a released Diffusion-LLM directory "
        f"({RELEASED_WEIGHTS_FILE} with {RELEASED_MLM_PREFIX}roberta.* weights)"
    )


def read_fairseq(checkpoint: str) -> PretrainedMLM:
    """A fairseq RoBERTa / XLM-R checkpoint, loaded and upgraded by fairseq itself.

    The dictionary is ``dict.txt`` next to the checkpoint, else the one in the
    checkpoint's training data directory; the masked-LM task appends ``<mask>``.
    """
    from fairseq import checkpoint_utils
    from fairseq.models.roberta import RobertaEncoder

    directory = os.path.dirname(os.path.abspath(checkpoint))
    has_dictionary = os.path.isfile(os.path.join(directory, DICTIONARY_FILE))
    try:
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [checkpoint], arg_overrides={"data": directory} if has_dictionary else None
        )
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{checkpoint}: {error}; put the masked LM's {DICTIONARY_FILE} next to the checkpoint"
        ) from error
    encoder = getattr(models[0], "encoder", None)
    if not isinstance(encoder, RobertaEncoder):
        raise ValueError(
            f"{checkpoint} holds a {type(models[0]).__name__}, not a RoBERTa / XLM-R masked "
            "LM (fairseq-train --task masked_lm --arch roberta...)"
        )
    return PretrainedMLM(
        source=checkpoint,
        state={
            name: parameter.detach()
            for name, parameter in encoder.named_parameters(remove_duplicate=False)
        },
        symbols=list(task.source_dictionary.symbols),
    )


def read_huggingface(directory: str) -> PretrainedMLM:
    """A Hugging Face XLM-R / XLM-R-XL masked LM, loaded by transformers."""
    from transformers import AutoConfig, AutoModelForMaskedLM, XLMRobertaXLForMaskedLM

    # facebook/xlm-roberta-xxl's config.json says model_type xlm-roberta but
    # architectures XLMRobertaXLForMaskedLM (pre-LayerNorm, docs/METHOD.md §1): the latter decides
    architectures = AutoConfig.from_pretrained(directory).architectures or []
    model_class = (
        XLMRobertaXLForMaskedLM if "XLMRobertaXLForMaskedLM" in architectures else AutoModelForMaskedLM
    )
    model, loading = model_class.from_pretrained(directory, output_loading_info=True)
    if loading["missing_keys"]:
        raise ValueError(
            f"{directory}: {len(loading['missing_keys'])} parameters are missing from the "
            f"weights, e.g. {loading['missing_keys'][:3]}"
        )
    activation = model.config.hidden_act
    positions = getattr(model.config, "position_embedding_type", "absolute")
    if (activation, positions) != ("gelu", "absolute"):
        raise ValueError(
            f"{directory}/config.json: hidden_act {activation!r}, position_embedding_type "
            f"{positions!r}; the plugin's encoder is XLM-R's (gelu, absolute)"
        )
    return from_huggingface_state(directory, model.state_dict(), huggingface_symbols(directory))


def read_released_state(directory: str) -> Optional[Dict[str, Tensor]]:
    """The weights of a released Diffusion-LLM directory, or None for other directories."""
    path = os.path.join(directory, RELEASED_WEIGHTS_FILE)
    if not (os.path.isfile(path) and zipfile.is_zipfile(path)):  # released ones are zip files
        return None
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if any(name.startswith(RELEASED_MLM_PREFIX + "roberta.") for name in state):
        return state
    return None


def trainer_checkpoint(path: str) -> str:
    """``path``, or for a Hugging Face Trainer run directory (``checkpoint-N/``
    subdirectories) the one its last ``trainer_state.json`` names
    ``best_model_checkpoint`` (``--load_best_model_at_end``), else the highest N."""
    if not os.path.isdir(path) or os.path.isfile(os.path.join(path, RELEASED_WEIGHTS_FILE)):
        return path
    steps = {
        int(match.group(1)): name
        for name in os.listdir(path)
        if (match := TRAINER_CHECKPOINT.match(name)) and os.path.isdir(os.path.join(path, name))
    }
    if not steps:
        return path
    chosen, reason = os.path.join(path, steps[max(steps)]), "its last checkpoint"
    state_file = os.path.join(chosen, TRAINER_STATE_FILE)
    if os.path.isfile(state_file):
        with open(state_file, encoding="utf-8") as state:
            best = json.load(state).get("best_model_checkpoint")
        if best:  # a path on the training machine: its checkpoint-N under path
            best_dir = os.path.join(path, os.path.basename(os.path.normpath(best)))
            if not os.path.isdir(best_dir):
                raise FileNotFoundError(
                    f"{state_file} names best_model_checkpoint {best}, but {best_dir} is "
                    "missing; copy it there or pass the checkpoint-N directory to read"
                )
            chosen, reason = best_dir, f"best_model_checkpoint of {state_file}"
    logger.info(f"{path}: reading {chosen} ({reason})")
    return chosen


def check_trainer_config(directory: str, mlm_state: Dict[str, Tensor], vocabulary_dir: str) -> None:
    """The hidden size and layer count of ``mlm_state`` must be those of
    ``vocabulary_dir``'s config.json (the XLM-R the checkpoint was trained from)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(vocabulary_dir)
    layers = {int(m.group(1)) for name in mlm_state if (m := re.match(r"roberta\.encoder\.layer\.(\d+)\.", name))}
    found = (mlm_state["roberta.embeddings.word_embeddings.weight"].size(1), len(layers))
    expected = (config.hidden_size, config.num_hidden_layers)
    if found != expected:
        raise ValueError(
            f"{directory}: hidden size {found[0]} with {found[1]} layers, but "
            f"{vocabulary_dir}/config.json has {expected[0]} with {expected[1]}; name the "
            "XLM-R the checkpoint was trained from (--xlmr-dir)"
        )


def from_released_state(directory: str, state: Dict[str, Tensor],
                        vocabulary_dir: Optional[str] = None) -> PretrainedMLM:
    """The backbone and length predictor of a released Diffusion-LLM checkpoint, or of
    a checkpoint the official code's Trainer wrote (its config and tokenizer in
    ``vocabulary_dir``).

    Its ``length_trm`` / ``length_predictor`` names are those of :class:`LengthPredictor`.
    """
    if vocabulary_dir is None and not any(
        os.path.isfile(os.path.join(directory, name)) for name in TOKENIZER_FILES
    ):
        raise ValueError(
            f"{directory} holds only weights ({RELEASED_WEIGHTS_FILE}, as the official code's "
            "Trainer writes checkpoint-N/); name the XLM-R it was trained from (config.json "
            f"and tokenizer files): python scripts/convert_pretrained.py {directory} OUTDIR "
            "--xlmr-dir XLMR_DIR --arch ..."
        )
    mlm_state, length_state = {}, {}
    for name, value in state.items():
        if name.startswith(RELEASED_MLM_PREFIX):
            mlm_state[name[len(RELEASED_MLM_PREFIX):]] = value
        elif name.startswith(RELEASED_LENGTH_PREFIXES):
            length_state[name] = value
        else:
            logger.warning(f"{directory}: ignoring {name}")
    if vocabulary_dir is not None:
        check_trainer_config(directory, mlm_state, vocabulary_dir)
    symbols = huggingface_symbols(vocabulary_dir or directory)
    rows = mlm_state["roberta.embeddings.word_embeddings.weight"].size(0)
    if rows != len(symbols):
        raise ValueError(
            f"{directory}: {rows} embedding rows, but the vocabulary of "
            f"{vocabulary_dir or directory} has {len(symbols)} tokens; only checkpoints with "
            "XLM-R's whole vocabulary (instruction tuning) are read, not the pruned ones of "
            "task runs"
        )
    pretrained = from_huggingface_state(directory, mlm_state, symbols)
    pretrained.length_predictor = length_state or None
    return pretrained


def huggingface_symbols(directory: str) -> List[Optional[str]]:
    """Token of each row: from a fairseq ``dict.txt`` in the directory (written by
    ``scripts/export_huggingface.py``) or else from its tokenizer's vocabulary."""
    dictionary_path = os.path.join(directory, DICTIONARY_FILE)
    if os.path.isfile(dictionary_path):
        symbols = list(Dictionary.load(dictionary_path).symbols)
        return symbols if MASK_SYMBOL in symbols else symbols + [MASK_SYMBOL]
    from transformers import AutoTokenizer

    try:
        vocabulary = AutoTokenizer.from_pretrained(directory).get_vocab()
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(
            f"{directory}: no tokenizer gives the token of each embedding row ({error}); copy "
            "the tokenizer files of the model (sentencepiece.bpe.model, tokenizer_config.json) "
            "into it"
        ) from error
    symbols = [None] * (max(vocabulary.values()) + 1)
    for token, row in vocabulary.items():
        symbols[row] = token
    return symbols


def from_huggingface_state(source, hf_state, symbols) -> PretrainedMLM:
    """RobertaEncoder parameters from a Hugging Face XLM-R / XLM-R-XL masked-LM state.

    The single token-type embedding, added to every token, goes into the position
    embeddings; a tied LM-head projection saved without its weight is the embedding.
    """
    pre_ln = "roberta.encoder.LayerNorm.weight" in hf_state
    names = HF_NAMES + (HF_PRE_LN_NAMES if pre_ln else HF_POST_LN_NAMES)
    state, unknown = {}, []
    for name, value in hf_state.items():
        new_name = rename(name, names)
        if new_name is not None:
            state[new_name] = value
        elif name != HF_TOKEN_TYPES and not name.startswith(HF_UNUSED_PREFIXES):
            unknown.append(name)
    if unknown:
        raise ValueError(
            f"{source}: unknown parameters {unknown[:4]}; only XLM-R (XLMRobertaForMaskedLM) "
            "and XLM-R XL (XLMRobertaXLForMaskedLM) masked LMs can be read"
        )
    if HF_TOKEN_TYPES in hf_state and POSITIONS in state:
        state[POSITIONS] = state[POSITIONS] + hf_state[HF_TOKEN_TYPES][0]
    if state.get(OUTPUT_WEIGHT, torch.empty(0)).numel() == 0 and EMBEDDINGS in state:
        state[OUTPUT_WEIGHT] = state[EMBEDDINGS]
    return PretrainedMLM(source=source, state=state, symbols=symbols)


def rename(name: str, names, reverse: bool = False) -> Optional[str]:
    """``name`` under the first matching (Hugging Face, fairseq) prefix pair, or None."""
    for hf_prefix, fairseq_prefix in names:
        old, new = (fairseq_prefix, hf_prefix) if reverse else (hf_prefix, fairseq_prefix)
        match = re.match(r"(\d+)".join(map(re.escape, old.split("#"))), name)
        if match:
            layer = match.group(1) if "#" in old else ""
            return new.replace("#", layer) + name[match.end():]
    return None


# ------------------------------------------------------------------------- loading
def embedding_rows(symbols: Sequence[Optional[str]], dictionary: Dictionary):
    """Pretrained row of each dictionary symbol, ``<unk>``'s row for those it lacks.

    Returns a LongTensor (len(dictionary),) and the list of symbols not found.
    """
    row_of = {}
    for row, symbol in enumerate(symbols):
        if symbol is not None:
            row_of.setdefault(symbol, row)
    unk_row = row_of[dictionary.unk_word]
    rows = [row_of.get(symbol, unk_row) for symbol in dictionary.symbols]
    return torch.tensor(rows), [symbol for symbol in dictionary.symbols if symbol not in row_of]


def load_pretrained_mlm(model, pretrained: PretrainedMLM, vocabulary: str = "prune") -> None:
    """Copy ``pretrained`` into ``model`` (a DiffusionXLMRModel), row i of its embedding,
    LM-head projection and bias from the pretrained row of dictionary symbol i.

    ``prune``: symbols the masked LM lacks get ``<unk>``'s row (the model is untied).
    ``full``: every symbol must be found, and a tied model needs a tied masked LM.
    """
    if any(type(module).__name__ == "FullyShardedDataParallel" for module in model.modules()):
        raise ValueError(
            "--pretrained-mlm cannot fill layers already sharded by --ddp-backend "
            "fully_sharded; convert first (python scripts/convert_pretrained.py SOURCE OUTDIR "
            "--data DATA ...) and train with --finetune-from-model OUTDIR/checkpoint.pt "
            "(docs/PRETRAINED.md)"
        )
    encoder = model.encoder
    dictionary = encoder.dictionary
    rows, unknown = embedding_rows(pretrained.symbols, dictionary)
    if vocabulary == "full":
        if unknown:
            raise ValueError(
                f"--pretrained-vocab full: {len(unknown)} symbols of the task dictionary are "
                f"not in the vocabulary of {pretrained.source}, e.g. {unknown[:5]}; binarize "
                "with the masked LM's dictionary (scripts/prepare_prompted.py --spm-model ... "
                "--dict ...) or use --pretrained-vocab prune"
            )
        if model.tied_embeddings and not pretrained.tied:
            raise ValueError(
                f"{pretrained.source} has separate input and output embeddings; "
                "pass --untie-weights-roberta"
            )
    state = dict(pretrained.state)
    for name in VOCABULARY_ROWS:
        if name in state:
            state[name] = state[name][rows]
    copy_parameters(encoder, state, pretrained.source, "encoder.")
    if pretrained.length_predictor is not None:
        if model.cfg.length_predictor == "separate":
            copy_parameters(
                model.length_predictor, pretrained.length_predictor, pretrained.source,
                "length_predictor.",
            )
        else:
            logger.info(f"{pretrained.source}: length predictor unused (--length-predictor joint)")
    logger.info(
        f"initialised from {pretrained.source}: {len(dictionary) - len(unknown)} of "
        f"{len(dictionary)} dictionary symbols found, the others take <unk>'s row "
        f"({vocabulary} vocabulary)"
    )


def copy_parameters(module, state: Dict[str, Tensor], source: str, prefix: str) -> None:
    """Copy ``state`` into the parameters of ``module``; names and shapes must match."""
    parameters = dict(module.named_parameters(remove_duplicate=False))
    missing = sorted(set(parameters) - set(state))
    unexpected = sorted(set(state) - set(parameters))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit the model: missing {[prefix + n for n in missing[:4]]}, "
            f"unexpected {[prefix + n for n in unexpected[:4]]}; choose the checkpoint's "
            "architecture: post-LayerNorm XLM-R --arch diffusion_xlmr_{base,large}, "
            "pre-LayerNorm XLM-R XL/XXL --arch diffusion_xlmr_{xl,xxl}, and --encoder-layers"
        )
    for name, parameter in parameters.items():
        if state[name].shape != parameter.shape:
            raise ValueError(
                f"{source}: parameter {prefix}{name} has shape {tuple(state[name].shape)} in "
                f"the checkpoint but {tuple(parameter.shape)} in the model; choose the "
                "checkpoint's architecture (--arch, --encoder-embed-dim, "
                "--encoder-ffn-embed-dim, --max-positions, --length-classes)"
            )
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(state[name])


def vocabulary_dictionary(pretrained: PretrainedMLM) -> Dictionary:
    """A fairseq Dictionary of the masked LM's named rows in row order (full vocabulary)."""
    dictionary = Dictionary()
    for symbol in pretrained.symbols[dictionary.nspecial:]:
        if symbol is not None:
            dictionary.add_symbol(symbol)
    return dictionary


def save_checkpoint(cfg, model, path: str) -> None:
    """Write ``model`` as a fairseq checkpoint read by ``fairseq-generate --path`` and
    ``fairseq-train --finetune-from-model`` (step 0, no optimizer state)."""
    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    state = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": "MaskedDiffusionCriterion",
                "optimizer_name": "none",
                "lr_scheduler_state": {},
                "num_updates": 0,
            }
        ],
        "task_state": {},
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0}},
    }
    checkpoint_utils.torch_persistent_save(state, path)


# ------------------------------------------------------------------------- export
def to_huggingface(model, dictionary: Dictionary):
    """A transformers masked LM holding ``model``'s encoder and LM head: XLM-R
    (post-LayerNorm) or XLM-R XL (pre-LayerNorm), one row per dictionary symbol."""
    from transformers import (
        XLMRobertaConfig,
        XLMRobertaForMaskedLM,
        XLMRobertaXLConfig,
        XLMRobertaXLForMaskedLM,
    )

    cfg, encoder = model.cfg, model.encoder
    pre_ln = cfg.encoder_normalize_before
    if cfg.layernorm_embedding == pre_ln or cfg.activation_fn != "gelu":
        raise ValueError(
            "only XLM-R layouts export: post-LayerNorm with --layernorm-embedding or "
            "pre-LayerNorm without, and gelu"
        )
    if pre_ln:
        config_class, model_class = XLMRobertaXLConfig, XLMRobertaXLForMaskedLM
    else:
        config_class, model_class = XLMRobertaConfig, XLMRobertaForMaskedLM
    config = config_class(
        vocab_size=len(dictionary),
        hidden_size=cfg.encoder_embed_dim,
        num_hidden_layers=cfg.encoder_layers,
        num_attention_heads=cfg.encoder_attention_heads,
        intermediate_size=cfg.encoder_ffn_embed_dim,
        hidden_act="gelu",
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        max_position_embeddings=encoder.sentence_encoder.embed_positions.weight.size(0),
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=dictionary.pad(),
        bos_token_id=dictionary.bos(),
        eos_token_id=dictionary.eos(),
        tie_word_embeddings=model.tied_embeddings,
    )
    names = HF_NAMES + (HF_PRE_LN_NAMES if pre_ln else HF_POST_LN_NAMES)
    hf_state = {
        rename(name, names, reverse=True): value.detach()
        for name, value in encoder.named_parameters(remove_duplicate=False)
    }
    hf_state[HF_OUTPUT_BIAS_COPY] = hf_state["lm_head.bias"]
    hf_state[HF_TOKEN_TYPES] = torch.zeros(1, cfg.encoder_embed_dim)
    hf_model = model_class(config)
    missing, unexpected = hf_model.load_state_dict(hf_state, strict=False)
    hf_parameters = dict(hf_model.named_parameters(remove_duplicate=False))
    missing = [name for name in missing if name in hf_parameters]
    if missing or unexpected:
        raise RuntimeError(
            f"export to {model_class.__name__}: missing {missing}, unexpected {unexpected}"
        )
    return hf_model.eval()


SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>", MASK_SYMBOL)
SENTENCEPIECE_NORMAL, SENTENCEPIECE_USER_DEFINED = 1, 4
NEVER_CHOSEN_SCORE = -1e9  # a dictionary symbol sentencepiece cannot produce


def dictionary_tokenizer(sentencepiece_model: str, dictionary: Dictionary):
    """A transformers tokenizer whose ids are ``dictionary``'s rows: the pieces of
    ``sentencepiece_model`` (its normalizer, unigram scores or BPE merge order) re-mapped
    to the rows, ``<s> ... </s>`` around each text, so that it gives the ids of
    sentencepiece encoding followed by the dictionary lookup of fairseq's binarizer.

    Returns ``(tokenizer, None)``, or ``(None, reason)`` when some piece has no row (the
    binarizer maps it to ``<unk>``, which no Hugging Face tokenizer model can).
    """
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import processors
    from tokenizers.models import BPE, Unigram
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter

    proto = sentencepiece_model_pb2.ModelProto()
    with open(sentencepiece_model, "rb") as model_file:
        proto.ParseFromString(model_file.read())
    pieces = {
        piece.piece: (piece.score, sp_id)
        for sp_id, piece in enumerate(proto.pieces)
        if piece.type in (SENTENCEPIECE_NORMAL, SENTENCEPIECE_USER_DEFINED)
    }
    missing = [piece for piece in pieces if piece not in dictionary.indices]
    if missing:
        return None, (
            f"{len(missing)} of the {len(pieces)} pieces of the sentencepiece model have no "
            f"dictionary row (e.g. {missing[:3]}); fairseq reads them as <unk>"
        )
    # the normalizer, pre-tokenizer and decoder follow the sentencepiece model's settings;
    # the model is then replaced by one over the dictionary's rows
    user_defined = any(piece.type == SENTENCEPIECE_USER_DEFINED for piece in proto.pieces)
    byte_fallback = proto.trainer_spec.byte_fallback
    if proto.trainer_spec.model_type == sentencepiece_model_pb2.TrainerSpec.UNIGRAM:
        tokenizer = SpmConverter.build_tokenizer_from_spm_proto(
            proto, [(piece.piece, piece.score) for piece in proto.pieces]
        )
        tokenizer.model = Unigram(
            [
                (symbol, pieces[symbol][0] if symbol in pieces else
                 0.0 if symbol in SPECIAL_SYMBOLS else NEVER_CHOSEN_SCORE)
                for symbol in dictionary.symbols
            ],
            unk_id=dictionary.unk(), byte_fallback=byte_fallback,
        )
    elif proto.trainer_spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE:
        merges = [  # sentencepiece merges the pair whose result scores highest first
            (left, right) for _, _, left, right in sorted(
                (-score, sp_id, token[:split], token[split:])
                for token, (score, sp_id) in pieces.items()
                for split in range(1, len(token))
                if token[:split] in pieces and token[split:] in pieces
            )
        ]
        tokenizer = SpmConverter.build_tokenizer_from_spm_proto(
            proto, {piece.piece: sp_id for sp_id, piece in enumerate(proto.pieces)}, merges
        )
        tokenizer.model = BPE(
            vocab={symbol: dictionary.index(symbol) for symbol in (*SPECIAL_SYMBOLS, *pieces)},
            merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=byte_fallback,
            ignore_merges=user_defined,
        )
    else:
        return None, f"{sentencepiece_model} is neither a unigram nor a BPE model"
    bos, eos = "<s>", "</s>"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, dictionary.bos()), (eos, dictionary.eos())],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        unk_token="<unk>", pad_token="<pad>", mask_token=MASK_SYMBOL,
    ), None
