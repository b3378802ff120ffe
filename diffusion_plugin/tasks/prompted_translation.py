"""Prompted translation: fairseq-binarized prompt/target pairs decoded by diffusion."""

import glob
import hashlib
import json
import logging
import os
from argparse import Namespace
from dataclasses import dataclass, field

from fairseq import utils
from fairseq.data import encoders
from fairseq.data.encoders.sentencepiece_bpe import SentencepieceBPE, SentencepieceConfig
from fairseq.dataclass import ChoiceEnum
from fairseq.scoring.tokenizer import EvaluationTokenizer
from fairseq.tasks import FairseqTask, register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask, load_langpair_dataset
from omegaconf import II

from diffusion_plugin.absorbing_diffusion import DEFAULT_NUM_STEPS
from diffusion_plugin.constants import (
    CHECKPOINT_PATH_KEY,
    DATA_IDENTITY_KEY,
    MASK_SYMBOL,
    PROMPT_TEMPLATE_FILE,
    SENTENCEPIECE_MODEL,
)
from diffusion_plugin.data.prompted_pair_dataset import PromptedPairDataset
from diffusion_plugin.decoding_config import (
    DecodingConfig,
    check_option_names,
    decoding_config,
    generator_arguments,
)
from diffusion_plugin.diffusion_generator import DiffusionGenerator
from diffusion_plugin.metrics import ROUGE_TOKENIZERS
from diffusion_plugin.models.diffusion_xlmr import DiffusionXLMRModel
from diffusion_plugin.option_ranges import check_ranges
from diffusion_plugin.pretrained import load_pretrained_mlm, read_pretrained_mlm
from diffusion_plugin.scoring import VALIDATION_METRICS, log_validation_metrics, selected_metrics, statistic_key

logger = logging.getLogger(__name__)


@dataclass
class PromptedTranslationConfig(TranslationConfig, DecodingConfig):
    """fairseq's translation options, the decoding options (DecodingConfig) and these."""

    max_positions: int = field(
        default=512,
        metadata={
            "help": "longest <s> prompt target </s> sequence (at most the model's); longer "
            "training pairs are dropped and counted, longer valid/test/interactive ones are "
            "an error unless --truncate-source or --skip-invalid-size-inputs-valid-test"
        },
    )
    num_diffusion_steps: int = field(
        default=DEFAULT_NUM_STEPS,
        metadata={
            "help": "T of the forward process that --criterion masked_diffusion trains on: "
            "t ~ U{1..T}, a token is masked with probability rate(t, T) of its "
            "--noise-schedule (t/T for linear); decoding takes --iter-decode-max-iter steps"
        },
    )
    truncate_source: bool = field(
        default=False,
        metadata={
            "help": "cut the end of the prompt of each pair longer than --max-positions "
            "until it fits (counted in the log), in every split and in fairseq-interactive"
        },
    )
    seed: int = II("common.seed")
    eval_metrics: str = field(
        default="",
        metadata={
            "help": "comma-separated metrics of the decoded validation set ("
            + ", ".join(VALIDATION_METRICS)
            + "; --eval-bleu and --eval-rouge add theirs), all from one decoding with "
            "--eval-bleu-args, --eval-bleu-remove-bpe and --eval-bleu-detok"
        },
    )
    eval_rouge: bool = field(
        default=False,
        metadata={
            "help": "decode the validation set (with --eval-bleu-args, --eval-bleu-remove-bpe "
            "and --eval-bleu-detok; one decoding serves --eval-bleu too) and log ROUGE-1/2/L "
            "F1 as rouge1, rouge2, rougeL; select checkpoints with --best-checkpoint-metric "
            "rougeL --maximize-best-checkpoint-metric"
        },
    )
    eval_rouge_tokenizer: ChoiceEnum(ROUGE_TOKENIZERS) = field(
        default="py-rouge",
        metadata={
            "help": "words ROUGE compares: py-rouge's (stemmed, as the paper's scorer) or "
            "rouge-score's own (unstemmed)"
        },
    )
    eval_bleu_tokenize: EvaluationTokenizer.ALL_TOKENIZER_TYPES = field(
        default="13a",
        metadata={
            "help": "sacreBLEU tokenizer of --eval-bleu: 13a (the paper's IWSLT14), intl "
            "(its WMT14 runs), ...; --eval-tokenized-bleu means none"
        },
    )
    eval_cased: bool = field(
        default=False,
        metadata={
            "help": "score --eval-bleu / --eval-rouge on cased text (the paper lower-cases "
            "hypotheses and references)"
        },
    )
    prompt_template: str = field(
        default="auto",
        metadata={
            "help": "template with {src} applied to raw input lines by fairseq-interactive; "
            f"'auto' reads {PROMPT_TEMPLATE_FILE} from the data directory if present, "
            "'none' feeds lines unchanged"
        },
    )


class PromptTemplateTokenizer:
    """Applies the prompt template before an optional inner tokenizer (interactive use)."""

    def __init__(self, template, inner=None):
        self.template = template
        self.inner = inner

    def encode(self, line: str) -> str:
        line = self.template.replace("{src}", valid_utf8(line).strip())
        return self.inner.encode(line) if self.inner is not None else line

    def decode(self, line: str) -> str:
        return self.inner.decode(line) if self.inner is not None else line


@register_task("prompted_translation", dataclass=PromptedTranslationConfig)
class PromptedTranslationTask(TranslationTask):
    """Reads ``fairseq-preprocess`` output whose source side holds the prompted text.

    Both sides share one dictionary that contains ``<mask>``; each example becomes
    ``<s> prompt target </s>`` (see :class:`PromptedPairDataset`).
    """

    cfg: PromptedTranslationConfig

    @classmethod
    def add_args(cls, parser):
        """The task's options; fairseq's --beam (beam search, which diffusion decoding
        does not use) defaults to 1, so that fairseq's check of --sampling (--nbest must
        equal --beam) passes without flags."""
        super().add_args(parser)
        parser.set_defaults(beam=1)

    def __init__(self, cfg: PromptedTranslationConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.validation_metrics = selected_metrics(cfg)

    @classmethod
    def setup_task(cls, cfg: PromptedTranslationConfig, **kwargs):
        paths = utils.split_paths(cfg.data)
        if len(paths) == 0:
            raise ValueError("no data directory given")
        if cfg.source_lang is None or cfg.target_lang is None:
            raise ValueError("pass --source-lang and --target-lang (e.g. -s de -t en)")
        check_ranges(cfg)
        check_option_names(json.loads(cfg.eval_bleu_args or "{}"), f"--eval-bleu-args {cfg.eval_bleu_args}")
        check_direction(paths[0], cfg.source_lang, cfg.target_lang)
        src_path = os.path.join(paths[0], f"dict.{cfg.source_lang}.txt")
        tgt_path = os.path.join(paths[0], f"dict.{cfg.target_lang}.txt")
        for path in (src_path, tgt_path):
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"{path} not found; binarize with scripts/prepare_prompted.py"
                )
        src_dict = cls.load_dictionary(src_path)
        tgt_dict = cls.load_dictionary(tgt_path)
        if src_dict.symbols != tgt_dict.symbols:
            raise ValueError(
                f"{src_path} and {tgt_path} differ; the prompt and the target share one "
                "sequence and need one dictionary: binarize with fairseq-preprocess "
                "--joined-dictionary (or --srcdict D --tgtdict D)"
            )
        if MASK_SYMBOL not in src_dict.indices:
            raise ValueError(
                f"{src_path} has no {MASK_SYMBOL} symbol, which the diffusion uses as its "
                f"absorbing state; add a line '{MASK_SYMBOL} 1' to the dictionary before "
                "binarizing (scripts/prepare_prompted.py always does)"
            )
        logger.info(f"dictionary: {len(src_dict)} types ({MASK_SYMBOL}={src_dict.index(MASK_SYMBOL)})")
        decoding_config(cfg).validate()
        return cls(cfg, src_dict, src_dict)

    def data_identity(self) -> dict:
        """What a checkpoint records of the data it is trained on: the dictionary (its
        size and the sha256 of its symbols in order), the prompt template of the data
        directory (None without one) and the direction -s -> -t."""
        template_path = os.path.join(utils.split_paths(self.cfg.data)[0], PROMPT_TEMPLATE_FILE)
        template = None
        if os.path.exists(template_path):
            with open(template_path, encoding="utf-8") as f:
                template = f.read().strip()
        symbols = "\n".join(self.src_dict.symbols).encode("utf-8")
        return {
            "dictionary": f"{len(self.src_dict.symbols)} symbols, sha256 {hashlib.sha256(symbols).hexdigest()[:16]}",
            "prompt_template": template,
            "direction": f"{self.cfg.source_lang}->{self.cfg.target_lang}",
        }

    def state_dict(self):
        """fairseq's task state (saved with every checkpoint) and ``data_identity``."""
        return {**super().state_dict(), DATA_IDENTITY_KEY: self.data_identity()}

    def load_state_dict(self, state_dict):
        """fairseq's, after ``check_data_identity`` (how fairseq-generate, -interactive
        and the hub interface load a checkpoint's task state)."""
        self.check_data_identity(state_dict)
        ours = (DATA_IDENTITY_KEY, CHECKPOINT_PATH_KEY)
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in ours})

    def check_data_identity(self, task_state, dictionary_only=False):
        """A ValueError naming the checkpoint, the data directory and each part of the
        checkpoint's data fingerprint (``task_state``) that differs from this task's
        (only the dictionary when fine-tuning); a warning if it has none."""
        checkpoint = task_state.get(CHECKPOINT_PATH_KEY, "the checkpoint")
        data = utils.split_paths(self.cfg.data)[0]
        saved = task_state.get(DATA_IDENTITY_KEY)
        if saved is None:
            logger.warning(
                f"{checkpoint} records no fingerprint of the data it was trained on (saved by "
                f"an older version of the plugin), so it is not checked against {data}: make "
                "sure it is that data"
            )
            return
        current = self.data_identity()
        where = {
            "dictionary": os.path.join(data, f"dict.{self.cfg.source_lang}.txt"),
            "prompt_template": os.path.join(data, PROMPT_TEMPLATE_FILE),
            "direction": f"-s {self.cfg.source_lang} -t {self.cfg.target_lang}",
        }
        parts = ["dictionary"] if dictionary_only else list(where)
        differ = [
            f"its {part.replace('_', ' ')} is {saved.get(part)!r}, {where[part]} has {current[part]!r}"
            for part in parts if saved.get(part) != current[part]
        ]
        if differ:
            raise ValueError(
                f"{checkpoint} was trained on other data than {data}: "
                + "; ".join(differ)
                + ". Use the data directory (and -s/-t) the checkpoint was trained on"
            )

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        paths = utils.split_paths(self.cfg.data)
        if split != self.cfg.train_subset:
            paths = paths[:1]
        pairs = load_langpair_dataset(
            paths[(epoch - 1) % len(paths)],
            split,
            self.cfg.source_lang,
            self.src_dict,
            self.cfg.target_lang,
            self.tgt_dict,
            combine=combine,
            dataset_impl=self.cfg.dataset_impl,
            upsample_primary=self.cfg.upsample_primary,
            left_pad_source=False,
            left_pad_target=False,
            max_source_positions=self.cfg.max_positions,
            max_target_positions=self.cfg.max_positions,
            prepend_bos=False,
            shuffle=False,
        )
        self.datasets[split] = PromptedPairDataset(
            pairs,
            self.cfg.max_positions,
            training=split == self.cfg.train_subset,
            truncate=self.cfg.truncate_source,
            seed=self.cfg.seed,
        )

    def build_dataset_for_inference(self, src_tokens, src_lengths, constraints=None):
        pairs = super().build_dataset_for_inference(src_tokens, src_lengths, constraints)
        return PromptedPairDataset(
            pairs, self.cfg.max_positions, training=False, truncate=self.cfg.truncate_source
        )

    def max_positions(self):
        return self.cfg.max_positions

    def build_model(self, cfg, from_checkpoint=False):
        """A ``diffusion_xlmr`` model; --max-positions is lowered to its positions. A new
        model (not one a checkpoint is about to fill) starts from ``--pretrained-mlm``
        when given; then LoRA adapters are added with ``--lora-rank``."""
        model = super().build_model(cfg, from_checkpoint)
        if not isinstance(model, DiffusionXLMRModel):
            raise ValueError(
                f"--task prompted_translation needs a diffusion_xlmr model, got {cfg._name} "
                f"({type(model).__name__}): train with --arch diffusion_xlmr_* and decode "
                "that checkpoint"
            )
        self.cfg.max_positions = min(self.cfg.max_positions, model.max_positions())
        if not from_checkpoint and getattr(cfg, "pretrained_mlm", None):
            pretrained = read_pretrained_mlm(cfg.pretrained_mlm)
            load_pretrained_mlm(model, pretrained, str(cfg.pretrained_vocab))
        model.add_lora()
        if self.validation_metrics and not self.cfg.eval_bleu:  # fairseq builds these for BLEU only
            self.tokenizer = encoders.build_tokenizer(
                Namespace(tokenizer=self.cfg.eval_bleu_detok, **json.loads(self.cfg.eval_bleu_detok_args))
            )
            self.sequence_generator = self.build_generator([model], Namespace(**json.loads(self.cfg.eval_bleu_args)))
        return model

    def valid_step(self, sample, model, criterion):
        """The loss and the statistics of the selected validation metrics
        (``scoring.VALIDATION_METRICS``), all from one decoding of the batch."""
        loss, sample_size, logging_output = FairseqTask.valid_step(self, sample, model, criterion)
        if not self.validation_metrics:
            return loss, sample_size, logging_output
        hyps, refs = self._decode_validation(sample, model)
        if self.cfg.eval_bleu_print_samples:
            logger.info(f"example hypothesis: {hyps[0]}\nexample reference: {refs[0]}")
        for name in self.validation_metrics:
            for key, value in VALIDATION_METRICS[name].statistics(hyps, refs, self.cfg).items():
                logging_output[statistic_key(name, key)] = value
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        FairseqTask.reduce_metrics(self, logging_outputs, criterion)  # the metrics are ours, not fairseq's BLEU
        log_validation_metrics(self.validation_metrics, logging_outputs)

    def _decode_validation(self, sample, model):
        """Best hypotheses and references of a validation batch as detokenized text,
        lower-cased unless --eval-cased (the paper's decode; ``<unk>`` on both sides)."""

        def decode(tokens):
            text = self.tgt_dict.string(tokens.int().cpu(), self.cfg.eval_bleu_remove_bpe)
            text = (self.tokenizer.decode(text) if self.tokenizer else text).strip()
            return text if self.cfg.eval_cased else text.lower()

        hypos = self.inference_step(self.sequence_generator, [model], sample, prefix_tokens=None)
        hyps = [decode(h[0]["tokens"]) for h in hypos]
        refs = [decode(utils.strip_pad(t, self.tgt_dict.pad())) for t in sample["target"]]
        return hyps, refs

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, *args, **kwargs):
        """fairseq's; a training set whose every pair is longer than the limits is an
        error naming them and the fix."""
        if getattr(dataset, "training", False):
            limits = {"--max-positions": self.cfg.max_positions, "--max-tokens": max_tokens}
            limits = {flag: value for flag, value in limits.items() if value is not None}
            shortest = int(dataset.sizes.min()) if len(dataset) else 0
            if len(dataset) == 0 or shortest > min(limits.values()):
                named = " and ".join(f"{flag} {value}" for flag, value in limits.items())
                raise ValueError(
                    f"no training pair fits {named}: the shortest of the {len(dataset):,} pairs "
                    f"has {shortest} tokens as <s> prompt target </s>; raise --max-tokens (and "
                    f"--max-positions, at most the model's positions) to at least {shortest}, "
                    "or pass --truncate-source to cut the prompts"
                )
        return super().get_batch_iterator(
            dataset, max_tokens, max_sentences, max_positions, ignore_invalid_inputs, *args, **kwargs
        )

    def filter_indices_by_size(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        """fairseq's filter, whose error for over-length examples names the ways around it."""
        kept, ignored = dataset.filter_indices_by_size(indices, max_positions)
        if len(ignored) > 0 and getattr(dataset, "training", False):
            logger.warning(
                f"skipped {len(ignored):,} of {len(indices):,} training pairs longer than "
                f"{max_positions} tokens (the smallest of --max-positions, the model's "
                "positions and --max-tokens)"
            )
        elif len(ignored) > 0:
            if not ignore_invalid_inputs:
                raise ValueError(
                    f"{len(ignored):,} of {len(indices):,} examples are longer than "
                    f"--max-positions {max_positions} as <s> prompt target </s> (the first, "
                    f"#{ignored[0]}, has {dataset.size(ignored[0])} tokens): pass "
                    "--truncate-source to cut their prompts or "
                    "--skip-invalid-size-inputs-valid-test to skip them"
                )
            logger.warning(
                f"skipped {len(ignored):,} examples longer than --max-positions {max_positions} "
                "(--skip-invalid-size-inputs-valid-test)"
            )
        return kept

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **unused):
        max_positions = min(self.cfg.max_positions, *(m.max_positions() for m in models))
        generator = DiffusionGenerator(
            self.target_dictionary,
            decoding_config(self.cfg, args),
            max_positions=max_positions,
            **generator_arguments(args),
        )
        logger.info(generator.describe())
        return generator

    def build_tokenizer(self, args):
        inner = encoders.build_tokenizer(args)
        template, origin = self.cfg.prompt_template, "--prompt-template"
        if template == "auto":
            origin = os.path.join(utils.split_paths(self.cfg.data)[0], PROMPT_TEMPLATE_FILE)
            template = open(origin, encoding="utf-8").read().strip() if os.path.exists(origin) else "none"
        if template == "none":
            return inner
        if "{src}" not in template:
            raise ValueError(
                f"{origin} {template!r} has no {{src}} placeholder; put {{src}} where the "
                "input line goes"
            )
        return PromptTemplateTokenizer(template, inner)

    def build_bpe(self, args, reads_raw_text=False):
        """fairseq's; without --bpe, the data directory's sentencepiece model (if it has
        one; ``data_sentencepiece``). A missing local --sentencepiece-model is named with
        the data's own."""
        if utils.safe_getattr(args, "_name") is None and utils.safe_getattr(args, "bpe") is None:
            return data_sentencepiece(utils.split_paths(self.cfg.data)[0], reads_raw_text)
        model = utils.safe_getattr(args, "sentencepiece_model")
        if model is not None and "://" not in model and not os.path.exists(model):
            data_model = os.path.join(utils.split_paths(self.cfg.data)[0], SENTENCEPIECE_MODEL)
            raise FileNotFoundError(
                f"--sentencepiece-model {model} not found; give the model the data was encoded "
                f"with (scripts/prepare_prompted.py writes it to {data_model})"
            )
        return super().build_bpe(args)


class DataSentencepiece(SentencepieceBPE):
    """The data directory's sentencepiece model, used when --bpe is not given. It decodes
    only text that has pieces (▁), so text --post-process sentencepiece already decoded is
    left as it is, and only once it reads raw text (``reads_raw_text``, set by encoding):
    fairseq-generate builds it too but reads binarized data, so its output stays as
    fairseq prints it."""

    def __init__(self, cfg, reads_raw_text=False):
        super().__init__(cfg)
        self.reads_raw_text = reads_raw_text

    def encode(self, x: str) -> str:
        self.reads_raw_text = True
        return super().encode(valid_utf8(x))

    def decode(self, x: str) -> str:
        return super().decode(x) if self.reads_raw_text and "\u2581" in x else x


def valid_utf8(line: str) -> str:
    """``line``; a ValueError if it holds bytes that are not UTF-8 (read from standard
    input as surrogates, which sentencepiece cannot encode)."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"input line {line.strip()[:60]!r} is not valid UTF-8 (byte "
            f"{hex(ord(line[error.start]) & 0xFF)} at character {error.start}); re-encode "
            "the input as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    return line


def data_sentencepiece(data, reads_raw_text=False):
    """The sentencepiece model ``data``/sentencepiece.bpe.model (None without one):
    fairseq-interactive's and the hub interface's encoding when --bpe is not given."""
    path = os.path.join(data, SENTENCEPIECE_MODEL)
    if not os.path.exists(path):
        return None
    logger.info(f"--bpe not given: encoding input lines with {path}")
    return DataSentencepiece(SentencepieceConfig(sentencepiece_model=path), reads_raw_text)


def check_direction(data, source_lang, target_lang):
    """A ValueError if prompted data (``data`` has a prompt template) is read against the
    direction it was binarized in (fairseq-preprocess names its files SPLIT.S-T.L)."""
    if not os.path.exists(os.path.join(data, PROMPT_TEMPLATE_FILE)):
        return
    forward = glob.glob(os.path.join(data, f"*.{source_lang}-{target_lang}.{source_lang}.idx"))
    reverse = glob.glob(os.path.join(data, f"*.{target_lang}-{source_lang}.{source_lang}.idx"))
    if reverse and not forward:
        raise ValueError(
            f"{data} holds prompted {target_lang}->{source_lang} data (its {PROMPT_TEMPLATE_FILE} "
            f"prompts the {target_lang} side) but -s {source_lang} -t {target_lang} reads it "
            f"in reverse: pass -s {target_lang} -t {source_lang} (or binarize "
            f"{source_lang}->{target_lang} with scripts/prepare_prompted.py --source-lang "
            f"{source_lang} --target-lang {target_lang})"
        )
