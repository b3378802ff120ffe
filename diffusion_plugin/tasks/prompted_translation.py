"""Prompted translation: fairseq-binarized prompt/target pairs decoded by diffusion."""

import json
import logging
import os
from argparse import Namespace
from dataclasses import dataclass, field

from fairseq import metrics, utils
from fairseq.data import encoders
from fairseq.dataclass import ChoiceEnum
from fairseq.scoring.tokenizer import EvaluationTokenizer
from fairseq.tasks import FairseqTask, register_task
from fairseq.tasks.translation import (
    EVAL_BLEU_ORDER,
    TranslationConfig,
    TranslationTask,
    load_langpair_dataset,
)
from omegaconf import II

from diffusion_plugin.absorbing_diffusion import DEFAULT_NUM_STEPS, AbsorbingDiffusion
from diffusion_plugin.constants import MASK_SYMBOL, PROMPT_TEMPLATE_FILE, SENTENCEPIECE_MODEL
from diffusion_plugin.data.prompted_pair_dataset import PromptedPairDataset
from diffusion_plugin.decoding_config import DecodingConfig, decoding_config, generator_arguments
from diffusion_plugin.diffusion_generator import DiffusionGenerator
from diffusion_plugin.metrics import ROUGE_TOKENIZERS, ROUGE_TYPES, bleu_statistics, rouge_sums
from diffusion_plugin.models.diffusion_xlmr import DiffusionXLMRModel
from diffusion_plugin.pretrained import load_pretrained_mlm, read_pretrained_mlm

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
            "help": "T of the diffusion (one schedule for the criterion and the generator): "
            "a token is masked with probability t/T, t ~ U{1..T}"
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
        line = self.template.replace("{src}", line.strip())
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

    def __init__(self, cfg: PromptedTranslationConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        # one schedule: the criterion's forward noising and the generator's reverse steps
        self.diffusion = AbsorbingDiffusion(src_dict.index(MASK_SYMBOL), cfg.num_diffusion_steps)

    @classmethod
    def setup_task(cls, cfg: PromptedTranslationConfig, **kwargs):
        paths = utils.split_paths(cfg.data)
        if len(paths) == 0:
            raise ValueError("no data directory given")
        if cfg.source_lang is None or cfg.target_lang is None:
            raise ValueError("pass --source-lang and --target-lang (e.g. -s de -t en)")
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
        when given."""
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
        if self.cfg.eval_rouge and not self.cfg.eval_bleu:  # fairseq builds these for BLEU only
            self.tokenizer = encoders.build_tokenizer(
                Namespace(tokenizer=self.cfg.eval_bleu_detok, **json.loads(self.cfg.eval_bleu_detok_args))
            )
            self.sequence_generator = self.build_generator([model], Namespace(**json.loads(self.cfg.eval_bleu_args)))
        return model

    def valid_step(self, sample, model, criterion):
        """The loss and, with --eval-bleu and/or --eval-rouge, the statistics of both
        from one decoding of the batch (fairseq's own BLEU path would decode again)."""
        loss, sample_size, logging_output = FairseqTask.valid_step(self, sample, model, criterion)
        if not (self.cfg.eval_bleu or self.cfg.eval_rouge):
            return loss, sample_size, logging_output
        hyps, refs = self._decode_validation(sample, model)
        if self.cfg.eval_bleu_print_samples:
            logger.info(f"example hypothesis: {hyps[0]}\nexample reference: {refs[0]}")
        if self.cfg.eval_bleu:
            tokenize = "none" if self.cfg.eval_tokenized_bleu else str(self.cfg.eval_bleu_tokenize)
            bleu = bleu_statistics(hyps, refs, tokenize)
            logging_output["_bleu_sys_len"] = bleu.sys_len
            logging_output["_bleu_ref_len"] = bleu.ref_len
            for i in range(EVAL_BLEU_ORDER):
                logging_output[f"_bleu_counts_{i}"] = bleu.counts[i]
                logging_output[f"_bleu_totals_{i}"] = bleu.totals[i]
        if self.cfg.eval_rouge:
            for key, total in rouge_sums(hyps, refs, str(self.cfg.eval_rouge_tokenizer)).items():
                logging_output[f"_rouge_{key}_sum"] = total
            logging_output["_rouge_count"] = len(hyps)
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        if not self.cfg.eval_rouge:
            return
        count = sum(log.get("_rouge_count", 0) for log in logging_outputs)
        if count == 0:
            return
        metrics.log_scalar("_rouge_count", count)
        for key in ROUGE_TYPES:
            metrics.log_scalar(f"_rouge_{key}_sum", sum(log.get(f"_rouge_{key}_sum", 0) for log in logging_outputs))
            metrics.log_derived(
                key, lambda meters, key=key: round(100 * meters[f"_rouge_{key}_sum"].sum / meters["_rouge_count"].sum, 2)
            )

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

    def filter_indices_by_size(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        """fairseq's filter, whose error for over-length examples names the ways around it."""
        kept, ignored = dataset.filter_indices_by_size(indices, max_positions)
        if len(ignored) > 0:
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
            self.diffusion,
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

    def build_bpe(self, args):
        """fairseq's; a missing local --sentencepiece-model is named with the data's own."""
        model = utils.safe_getattr(args, "sentencepiece_model")
        if model is not None and "://" not in model and not os.path.exists(model):
            data_model = os.path.join(utils.split_paths(self.cfg.data)[0], SENTENCEPIECE_MODEL)
            raise FileNotFoundError(
                f"--sentencepiece-model {model} not found; give the model the data was encoded "
                f"with (scripts/prepare_prompted.py writes it to {data_model})"
            )
        return super().build_bpe(args)
