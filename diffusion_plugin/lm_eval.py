"""An lm-evaluation-harness model for this plugin's checkpoints (docs/EVALUATION.md).

    python -m diffusion_plugin.lm_eval --model_args path=CKPT,data=DATA_DIR,steps=10 \\
        --tasks arc_easy --batch_size 8

registers the model as ``diffusion_plugin`` and runs lm-eval's own command line
(``--model diffusion_plugin`` is added when no ``--model`` is given). From Python::

    import lm_eval, diffusion_plugin.lm_eval  # the import registers the model
    lm_eval.simple_evaluate(model="diffusion_plugin", model_args="path=CKPT,data=DATA_DIR",
                            tasks=["arc_easy"], batch_size=8)

* ``generate_until``: the context goes through the data directory's prompt template and
  sentencepiece model (the hub interface's tokenizer, as ``fairseq-interactive``), the
  task's :class:`DiffusionGenerator` decodes it with the target length from the length
  predictor (``length_beam`` lengths, as ``--iter-decode-with-beam``) or a fixed canvas of
  ``canvas`` tokens (at most the request's ``max_gen_toks``), and lm-eval's stop
  sequences cut the decoded text. Outputs the length predictor makes longer than
  ``max_gen_toks`` tokens are cut to it.
* ``loglikelihood(context, continuation)``: a Monte-Carlo estimate of the absorbing
  diffusion's evidence lower bound of the continuation given the context (the ELBO the
  ``elbo`` weighting of the criterion trains), plus the length predictor's log P(L) of
  its length (``length_logprob``); see :meth:`DiffusionLM.loglikelihood`.
* ``loglikelihood_rolling``: refused; see :data:`NO_ROLLING_LOGLIKELIHOOD`.
"""

import copy
import dataclasses
import logging
import os
import sys
import zlib
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq import utils
from fairseq.data import LanguagePairDataset
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from omegaconf import open_dict
from tqdm import tqdm

from diffusion_plugin.absorbing_diffusion import AbsorbingDiffusion
from diffusion_plugin.constants import MASK_SYMBOL
from diffusion_plugin.data.prompted_pair_dataset import PromptedPairDataset
from diffusion_plugin.decoding_config import FAIRSEQ_GENERATION_OPTIONS, DecodingConfig
from diffusion_plugin.hub_interface import from_pretrained
from diffusion_plugin.modules.length_classes import classes_of_lengths

logger = logging.getLogger(__name__)

MODEL_NAME = "diffusion_plugin"
NO_ROLLING_LOGLIKELIHOOD = (
    "loglikelihood_rolling (perplexity tasks such as wikitext) is not defined for the "
    "diffusion_plugin model: it needs the probability of a whole text without a prompt, "
    "token by token from the left, while this model is a conditional diffusion model over "
    "<s> prompt target </s> whose targets have a length predicted from a prompt and whose "
    "likelihood is known only as a Monte-Carlo bound given a prompt. Use tasks whose "
    "output_type is loglikelihood, multiple_choice or generate_until"
)
DECODING_OPTIONS = {f.name for f in dataclasses.fields(DecodingConfig)} - {"_name"}


@register_model(MODEL_NAME)
class DiffusionLM(LM):
    """lm-eval's ``LM`` over a diffusion_xlmr checkpoint.

    Options (``--model_args`` / ``model_args``): ``path`` (the checkpoint), ``data`` (its
    binarized data directory: dictionary, sentencepiece model, prompt template),
    ``prompt_template`` (``auto``: the data directory's, ``none``, or a template with
    ``{src}``), ``steps`` (``--iter-decode-max-iter``, 10), ``length_beam``
    (``--iter-decode-with-beam``, 3), ``canvas`` (a fixed target length instead of the
    length predictor; 0: off), any decoding option of ``fairseq-generate`` by its
    underscore name (``decoding_strategy``, ``temperature``, ``sampling``, ...),
    ``mc_samples`` (noise draws per loglikelihood request, 32), ``seed`` (0),
    ``length_logprob`` (add log P(L), true), ``greedy_check`` (decode each continuation
    at its length for ``is_greedy``, true), ``device`` and ``batch_size`` (requests per
    forward).
    """

    def __init__(self, path: str, data: Optional[str] = None, batch_size=1, device: Optional[str] = None,
                 max_batch_size=None, prompt_template: str = "auto", steps: int = 10, length_beam: int = 3,
                 canvas: int = 0, mc_samples: int = 32, seed: int = 0, length_logprob: bool = True,
                 greedy_check: bool = True, **decoding):
        super().__init__()
        if data is None:
            raise ValueError(
                "the diffusion_plugin model needs data=DATA_DIR in --model_args: the binarized data "
                "directory of the checkpoint (dictionary, sentencepiece model, prompt template)"
            )
        unknown = sorted(set(decoding) - DECODING_OPTIONS - set(FAIRSEQ_GENERATION_OPTIONS))
        if unknown:
            raise ValueError(
                f"--model_args {', '.join(unknown)} not understood; the diffusion_plugin model takes "
                "path, data, prompt_template, steps, length_beam, canvas, mc_samples, seed, "
                "length_logprob, greedy_check and the decoding options of fairseq-generate "
                "(docs/OPTIONS.md) with underscores, e.g. decoding_strategy=threshold0.9"
            )
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ValueError(f"--batch_size {batch_size!r}: give a number of requests (auto is not supported)")
        if mc_samples < 1 or canvas < 0:
            raise ValueError(f"mc_samples must be >= 1 and canvas >= 0, got {mc_samples} and {canvas}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--model_args path={path} is not a checkpoint file")
        self.hub = from_pretrained(os.path.dirname(os.path.abspath(path)), os.path.basename(path),
                                   data_name_or_path=os.path.abspath(data), prompt_template=prompt_template)
        self.task = self.hub.task
        self.model = self.hub.models[0]
        if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line asks for cuda by default; its own HF model falls back too
            logger.warning(f"--device {device}: CUDA is not available here, running on the CPU")
            device = "cpu"
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self._device)
        self.dictionary = self.task.source_dictionary
        # the forward process the checkpoint was trained with (its criterion's schedule)
        schedule = getattr(getattr(self.hub.cfg, "criterion", None), "noise_schedule", None) or "linear"
        self.diffusion = AbsorbingDiffusion(self.dictionary.index(MASK_SYMBOL),
                                            self.task.cfg.num_diffusion_steps, schedule)
        self.batch_size = int(batch_size)
        self.canvas = canvas
        self.mc_samples = mc_samples
        self.seed = seed
        self.length_logprob = length_logprob
        self.greedy_check = greedy_check
        self.decoding = {"iter_decode_max_iter": steps, "iter_decode_with_beam": length_beam, **decoding}
        self.max_positions = min(self.task.max_positions(), self.model.max_positions())

    # ------------------------------------------------------------ tokens
    def prompt_tokens(self, context: str) -> torch.Tensor:
        """``prompt`` (without ``</s>``) of a context: template, sentencepiece, dictionary."""
        return self.hub.encode(context)[:-1]

    def target_tokens(self, continuation: str) -> torch.Tensor:
        """``target </s>`` of a continuation: sentencepiece and dictionary, no template."""
        return self.hub.binarize(self.hub.apply_bpe(continuation.strip()))

    def fit(self, prompt: torch.Tensor, reserved: int, what: str) -> torch.Tensor:
        """``prompt </s>`` with the prompt's oldest tokens dropped so that ``<s> prompt``,
        ``reserved`` target tokens and ``</s>`` fit the model's positions."""
        keep = self.max_positions - 2 - reserved
        if keep < 0:
            raise ValueError(
                f"{what} of {reserved} tokens does not fit the model's {self.max_positions} positions"
            )
        return torch.cat([prompt[len(prompt) - min(keep, len(prompt)):], prompt.new_tensor([self.dictionary.eos()])])

    def batches(self, sources: List[torch.Tensor], targets: List[torch.Tensor]):
        """Collated batches (on the model's device) of at most ``batch_size`` (source, target)
        pairs, longest prompts first, with the request index of each row in ``id``."""
        order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            pairs = LanguagePairDataset(
                [sources[i] for i in chunk], [len(sources[i]) for i in chunk], self.dictionary,
                [targets[i] for i in chunk], [len(targets[i]) for i in chunk], self.dictionary,
                left_pad_source=False, left_pad_target=False, shuffle=False,
            )
            dataset = PromptedPairDataset(pairs, self.max_positions, training=False)
            sample = dataset.collater([dataset[i] for i in range(len(chunk))])
            sample["id"] = torch.LongTensor(chunk)
            yield utils.apply_to_sample(lambda t: t.to(self._device), sample)

    def generator(self, **overrides):
        """The task's generator with fairseq-generate's defaults, the model_args' decoding
        options and ``overrides``."""
        args = copy.deepcopy(self.hub.cfg.generation)
        with open_dict(args):
            for name, value in {**self.decoding, **overrides}.items():
                setattr(args, name, value)
        return self.task.build_generator([self.model], args)

    # ------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> List[str]:
        """The decoded continuation of each (context, gen_kwargs) request, cut at the first
        of its ``until`` strings; at most ``max_gen_toks`` tokens (lm-eval's default 256)."""
        outputs: List[Optional[str]] = [None] * len(requests)
        groups: Dict[Tuple, List[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(self.generation_options(request.args[1]), []).append(index)
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                        desc="Running generate_until requests")
        for (max_tokens, sampling, temperature), indices in groups.items():
            canvas = min(self.canvas, max_tokens)
            overrides = {"oracle_length": True, "iter_decode_with_beam": 1} if canvas else {}
            if sampling:
                overrides.update(sampling=True, temperature=temperature)
            generator = self.generator(**overrides)
            reserved = canvas or min(max_tokens, self.max_positions // 2)
            sources = [self.fit(self.prompt_tokens(requests[i].args[0]), reserved, "the canvas") for i in indices]
            # the reference of --oracle-length, ``<unk>×canvas </s>`` (unread without a canvas)
            reference = torch.full((canvas + 1,), self.dictionary.unk())
            reference[-1] = self.dictionary.eos()
            targets = [reference] * len(indices)
            for sample in self.batches(sources, targets):
                with utils.set_torch_seed(self.seed):
                    hypos = self.task.inference_step(generator, [self.model], sample)
                for local, best in zip(sample["id"].tolist(), hypos):
                    index = indices[local]
                    tokens = best[0]["tokens"][:-1][:max_tokens].cpu()
                    text = self.hub.decode(tokens)
                    outputs[index] = cut_at_stop(text, requests[index].args[1].get("until"))
                    self.cache_hook.add_partial("generate_until", requests[index].args, outputs[index])
                progress.update(len(hypos))
        progress.close()
        return outputs

    @staticmethod
    def generation_options(gen_kwargs: dict) -> Tuple[int, bool, float]:
        """(max_gen_toks, sampling, temperature) of a request's gen_kwargs."""
        temperature = float(gen_kwargs.get("temperature", 0.0) or 0.0)
        sampling = bool(gen_kwargs.get("do_sample", False)) and temperature > 0
        return int(gen_kwargs.get("max_gen_toks", 256)), sampling, temperature if sampling else 1.0

    # ------------------------------------------------------------ likelihood
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> List[Tuple[float, bool]]:
        """(log-likelihood estimate, is_greedy) of each (context, continuation) request.

        The estimate is ``E_t [T / t * sum_{masked i} log p(x_i | x_t)]`` over ``mc_samples``
        draws of ``t ~ U{1..T}`` and of x_t (each target token and the final ``</s>`` masked
        with probability t/T, as in training): the absorbing diffusion's evidence lower
        bound of ``log p(target | prompt, L)``, plus log P(L) of the length predictor with
        ``length_logprob``. The draws of a request come from a generator seeded by
        ``seed``, the context and the continuation's token count, so they do not depend
        on the batch or the order, and continuations of equal length share their noise
        (common random numbers for multiple choice). ``is_greedy``: whether decoding at the
        continuation's length (``steps``, the strategy, argmax proposals) gives it exactly
        (False for every request with ``greedy_check=false``).
        """
        prompts, targets = [], []
        for request in requests:
            context, continuation = request.args
            target = self.target_tokens(continuation)
            prompts.append(self.fit(self.prompt_tokens(context), len(target) - 1, "the continuation"))
            targets.append(target)
        scores = [0.0] * len(requests)
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                        desc="Running loglikelihood requests")
        for sample in self.batches(prompts, targets):
            ids = sample["id"].tolist()
            noise_seeds = [self.noise_seed(requests[i].args[0], len(targets[i])) for i in ids]
            with torch.no_grad():
                bound = self.elbo(sample, noise_seeds)
                if self.length_logprob:
                    bound = bound + self.length_log_probs(sample)
            for local, index in enumerate(ids):
                scores[index] = float(bound[local])
            progress.update(len(ids))
        progress.close()
        greedy = self.is_greedy(prompts, targets) if self.greedy_check else [False] * len(requests)
        results = list(zip(scores, greedy))
        for request, result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", request.args, result)
        return results

    def noise_seed(self, context: str, target_length: int) -> int:
        return zlib.crc32(f"{self.seed}\t{target_length}\t{context}".encode("utf-8"))

    def elbo(self, sample, noise_seeds: List[int]) -> torch.Tensor:
        """The Monte-Carlo ELBO (B,) of the targets of a batch (see :meth:`loglikelihood`)."""
        diffusion, samples = self.diffusion, self.mc_samples
        tokens, maskable = sample["tokens"], sample["target_mask"]
        rows, masks, times = [], [], []
        width = tokens.size(1)
        for row, noise_seed in enumerate(noise_seeds):
            length = int(tokens[row].ne(self.dictionary.pad()).sum())  # the draws see no padding
            with utils.set_torch_seed(noise_seed):
                t = diffusion.sample_time(samples).to(tokens.device)
                noised, masked = diffusion.q_sample(
                    tokens[row, :length].expand(samples, -1), maskable[row, :length].expand(samples, -1), t
                )
            rows.append(F.pad(noised, (0, width - length), value=self.dictionary.pad()))
            masks.append(F.pad(masked, (0, width - length), value=False))
            times.append(t)
        noised, masked, t = torch.cat(rows), torch.cat(masks), torch.cat(times)
        prompt_lengths = sample["net_input"]["src_lengths"].repeat_interleave(samples)
        logits = self.model.logits(noised, masked, prompt_lengths)
        targets = tokens.repeat_interleave(samples, dim=0)[masked]
        token_log_probs = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        per_row = torch.zeros(masked.size(0), device=logits.device)
        per_row.index_add_(0, masked.nonzero()[:, 0], token_log_probs)
        weighted = per_row * diffusion.loss_weight(t, "elbo")
        return weighted.view(-1, samples).mean(1)

    def length_log_probs(self, sample) -> torch.Tensor:
        """log P(L) (B,) of each target's length under the length predictor (-inf outside its classes)."""
        src_tokens = sample["net_input"]["src_tokens"]
        log_probs = self.model.forward_length(src_tokens).float().log_softmax(-1)
        classes = classes_of_lengths(sample["target"].ne(self.dictionary.pad()).sum(1) - 1)
        inside = (classes >= 0) & (classes < log_probs.size(-1))
        picked = log_probs.gather(1, classes.clamp(0, log_probs.size(-1) - 1).unsqueeze(1)).squeeze(1)
        return picked.masked_fill(~inside, float("-inf"))

    def is_greedy(self, sources: List[torch.Tensor], targets: List[torch.Tensor]) -> List[bool]:
        """Whether argmax decoding at each target's length gives the target."""
        generator = self.generator(oracle_length=True, iter_decode_with_beam=1, sampling=False, samples_per_length=1)
        greedy = [False] * len(sources)
        for sample in self.batches(sources, targets):
            for index, hypos in zip(sample["id"].tolist(), self.task.inference_step(generator, [self.model], sample)):
                greedy[index] = torch.equal(hypos[0]["tokens"].cpu(), targets[index])
        return greedy

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(NO_ROLLING_LOGLIKELIHOOD)


def cut_at_stop(text: str, until) -> str:
    """``text`` up to the first occurrence of any stop string of ``until`` (a string or a list)."""
    if isinstance(until, str):
        until = [until]
    for stop in until or []:
        if stop:
            text = text.split(stop)[0]
    return text


def main(argv=None):
    """lm-eval's command line with the diffusion_plugin model registered and chosen."""
    from lm_eval.__main__ import cli_evaluate

    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(arg in ("--model", "-M") or arg.startswith("--model=") for arg in argv):
        argv = ["--model", MODEL_NAME, *argv]
    sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
