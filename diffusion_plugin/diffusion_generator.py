"""Length-beam iterative generator: RDM's reverse process over ``<s> prompt <mask>* </s>``."""

import logging
from typing import Optional

import sacrebleu
import torch
from fairseq import utils

from diffusion_plugin.absorbing_diffusion import CONFIDENCES, AbsorbingDiffusion, ReverseStrategy
from diffusion_plugin.constants import LM_HEAD_POSITIONS

logger = logging.getLogger(__name__)

LENGTH_BEAM_MODES = ("topk", "window")
CANDIDATE_SELECTIONS = ("score", "mbr-bleu", "mbr-chrf")


class DiffusionGenerator:
    """Decodes with a :class:`DiffusionXLMRModel` through fairseq's NAT protocol.

    For every prompt, ``beam_size`` target lengths (the length head's top-k, a window
    around its argmax, or the reference length) each get ``samples_per_length``
    canvases (which differ only under sampling or a stochastic strategy); all canvases of
    a batch are denoised together for at most ``max_iter`` steps. A canvas leaves the
    batch as soon as nothing in it is masked and no later step can change it
    (``AbsorbingDiffusion.may_change_unmasked``: ``reparam-cond-*`` keeps a canvas while
    its schedule still re-masks), so stopping early changes no output
    (``force_max_iter`` runs every step anyway, as the official code does).
    Candidates are ordered by mean token log-prob or by minimum Bayes risk.

    Speed options that change no output: ``lm_head_positions`` (see
    ``DiffusionXLMRModel.forward_decoder``), ``keep_finished`` (finished canvases stay
    in the batch until the last one finishes) and ``separate_length_candidates`` (one
    batch per candidate slot instead of all candidates in one forward), the last two
    to measure what dropping and batching save. ``prompt_cache`` /
    ``prompt_cache_refresh`` cache the prompt's states (exact only for models trained
    with ``--prompt-attention prefix``).
    """

    def __init__(
        self,
        tgt_dict,
        max_iter: int = 10,
        beam_size: int = 1,
        strategy: str = "reparam-uncond-deterministic-cosine",
        retain_history: bool = False,
        max_positions: int = 512,
        length_beam_mode: str = "topk",
        oracle_length: bool = False,
        temperature: float = 1.0,
        sampling: bool = False,
        confidence: str = "prob",
        guidance_scale: float = 0.0,
        force_max_iter: bool = False,
        candidate_selection: str = "score",
        post_process: Optional[str] = None,
        samples_per_length: int = 1,
        lm_head_positions: str = "undecided",
        keep_finished: bool = False,
        separate_length_candidates: bool = False,
        prompt_cache: bool = False,
        prompt_cache_refresh: int = 0,
        temperature_scales_scores: bool = False,
    ):
        if max_iter < 1:
            raise ValueError(f"--iter-decode-max-iter must be >= 1, got {max_iter}")
        if beam_size < 1:
            raise ValueError(f"--iter-decode-with-beam must be >= 1, got {beam_size}")
        if samples_per_length < 1:
            raise ValueError(f"--samples-per-length must be >= 1, got {samples_per_length}")
        if length_beam_mode not in LENGTH_BEAM_MODES:
            raise ValueError(
                f"--length-beam-mode {length_beam_mode!r}: choose from {LENGTH_BEAM_MODES}"
            )
        if candidate_selection not in CANDIDATE_SELECTIONS:
            raise ValueError(
                f"--candidate-selection {candidate_selection!r}: choose from "
                f"{CANDIDATE_SELECTIONS}"
            )
        if confidence not in CONFIDENCES:
            raise ValueError(f"--unmasking-confidence {confidence!r}: choose from {CONFIDENCES}")
        if guidance_scale < 0:
            raise ValueError(f"--guidance-scale must be >= 0, got {guidance_scale}")
        self.strategy = ReverseStrategy.parse(strategy)
        if self.strategy.kind in ("mask-predict", "ancestral") and confidence != "prob":
            raise ValueError(
                f"--decoding-strategy {strategy} does not rank by confidence; "
                f"drop --unmasking-confidence {confidence}"
            )
        if temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {temperature}")
        if lm_head_positions not in LM_HEAD_POSITIONS:
            raise ValueError(
                f"--lm-head-positions {lm_head_positions!r}: choose from {LM_HEAD_POSITIONS}"
            )
        if prompt_cache_refresh < 0:
            raise ValueError(f"--prompt-cache-refresh must be >= 0, got {prompt_cache_refresh}")
        if prompt_cache and guidance_scale > 0:
            raise ValueError(
                "--prompt-cache does not combine with --guidance-scale (the unconditional "
                "pass masks the prompt); drop one of them"
            )
        self.tgt_dict = tgt_dict
        self.pad = tgt_dict.pad()
        self.eos = tgt_dict.eos()
        self.max_iter = max_iter
        self.beam_size = beam_size
        self.samples_per_length = samples_per_length
        self.num_candidates = beam_size * samples_per_length
        self.retain_history = retain_history
        self.max_positions = max_positions
        self.length_beam_mode = length_beam_mode
        self.oracle_length = oracle_length
        self.decoding_options = dict(
            strategy=self.strategy,
            temperature=temperature,
            sampling=sampling,
            confidence=confidence,
            guidance_scale=guidance_scale,
            lm_head_positions=lm_head_positions,
            prompt_cache=prompt_cache,
            prompt_cache_refresh=prompt_cache_refresh,
            temperature_scales_scores=temperature_scales_scores,
        )
        self.keep_finished = keep_finished
        self.separate_length_candidates = separate_length_candidates
        self.force_max_iter = force_max_iter
        self.candidate_selection = candidate_selection
        self.post_process = post_process

    def candidate_lengths(self, model, encoder_out, sample=None):
        """Target lengths of the canvases of each prompt: LongTensor (B, beam * samples).

        ``beam_size`` lengths, the length head's top-k (``topk``), CMLM's window around
        its argmax (``window``) or, with ``oracle_length``, the reference length, each
        repeated ``samples_per_length`` times and clipped to the room left after its
        prompt within ``max_positions``.
        """
        if self.oracle_length:
            if sample is None or sample.get("target") is None:
                raise ValueError("--oracle-length needs references (a test set with targets)")
            gold = sample["target"].ne(self.pad).sum(1) - 1  # 0 for an empty target
            lengths = gold.unsqueeze(1).repeat(1, self.beam_size)
        elif self.length_beam_mode == "window":
            best = model.predict_lengths(encoder_out, 1)
            offsets = utils.new_arange(best, 1, self.beam_size) - self.beam_size // 2
            lengths = (best + offsets).clamp(min=1)
        else:
            num_classes = encoder_out["length_logits"].size(-1)
            if self.beam_size > num_classes:
                raise ValueError(
                    f"--iter-decode-with-beam {self.beam_size} asks for more lengths than the "
                    f"model's {num_classes} length classes; use at most {num_classes}"
                )
            lengths = model.predict_lengths(encoder_out, self.beam_size)
        lengths = lengths.repeat_interleave(self.samples_per_length, dim=1)
        room = self.max_positions - encoder_out["prompt_lengths"] - 1
        if (room < 0).any():
            row = int((room < 0).nonzero()[0, 0])
            raise ValueError(
                f"prompt {row} of the batch has {int(encoder_out['prompt_lengths'][row])} tokens "
                f"and leaves no room for </s> within --max-positions {self.max_positions}"
            )
        room = room.unsqueeze(1)
        clipped = lengths > room
        if clipped.any():
            logger.warning(
                f"{int(clipped.any(1).sum())} prompt(s) leave too little room within "
                f"--max-positions {self.max_positions}; their candidate lengths were clipped"
            )
        return torch.minimum(lengths, room)

    @torch.no_grad()
    def generate(self, models, sample, prefix_tokens=None, constraints=None, **kwargs):
        """Returns, per sentence, hypotheses best-first as fairseq dicts."""
        if len(models) != 1:
            raise NotImplementedError("diffusion decoding of a model ensemble is not supported")
        if prefix_tokens is not None or constraints is not None:
            raise NotImplementedError("--prefix-size and constraints are not supported")
        model = models[0]
        src_tokens = sample["net_input"]["src_tokens"]
        batch_size = src_tokens.size(0)

        encoder_out = model.forward_encoder([src_tokens, sample["net_input"]["src_lengths"]])
        lengths = self.candidate_lengths(model, encoder_out, sample).view(-1)
        rows = utils.new_arange(src_tokens, batch_size).repeat_interleave(self.num_candidates)
        candidates = utils.new_arange(src_tokens, rows.numel())
        if self.separate_length_candidates:
            groups = candidates.view(batch_size, self.num_candidates).t()
        else:
            groups = candidates.unsqueeze(0)
        finals = [None] * rows.numel()
        for group in groups:
            group_encoder_out = model.reorder_encoder_out(encoder_out, rows[group])
            group_finals = self.denoise(model, group_encoder_out, lengths[group])
            for index, final in zip(group.tolist(), group_finals):
                finals[index] = final

        prompt_lengths = src_tokens.ne(self.pad).sum(1).repeat_interleave(self.num_candidates)
        finalized = []
        for sent in range(batch_size):
            hypos = []
            for index in range(sent * self.num_candidates, (sent + 1) * self.num_candidates):
                start, length = int(prompt_lengths[index]), int(lengths[index])
                final_tokens, final_scores, final_steps, final_history = finals[index]
                tokens = final_tokens[start : start + length + 1]
                positional_scores = final_scores[start : start + length + 1].clone()
                positional_scores[-1] = 0.0
                hypo = {
                    "tokens": tokens,
                    "positional_scores": positional_scores,
                    "score": positional_scores[:-1].mean() if length else positional_scores.sum(),
                    "hypo_attn": None,
                    "alignment": None,
                    "steps": final_steps,
                }
                if self.retain_history:
                    hypo["history"] = [
                        {
                            "tokens": h[start : start + length + 1],
                            "positional_scores": None,
                            "score": None,
                            "hypo_attn": None,
                            "alignment": None,
                        }
                        for h in final_history
                    ]
                hypos.append(hypo)
            finalized.append(self.select(hypos))
        return finalized

    def denoise(self, model, encoder_out, lengths):
        """Run the reverse process on one canvas per entry of lengths (N,).

        Returns, per canvas, (tokens (L,), scores (L,), steps, history or None) as it
        was when it finished: when nothing in it was masked and no later step could
        change it, or at step ``max_iter``.
        """
        decoder_out = model.initialize_output_tokens(
            encoder_out, encoder_out["src_tokens"], target_lengths=lengths
        )
        decoder_out = decoder_out._replace(
            max_step=self.max_iter,
            history=[decoder_out.output_tokens.clone()] if self.retain_history else None,
        )
        finals = [None] * lengths.numel()
        active = utils.new_arange(lengths, lengths.numel())
        for _ in range(self.max_iter):
            decoder_out = model.forward_decoder(decoder_out, encoder_out, **self.decoding_options)
            tokens = decoder_out.output_tokens
            if decoder_out.step == self.max_iter:
                done = tokens.new_ones(tokens.size(0)).bool()
            elif self.force_max_iter:
                done = tokens.new_zeros(tokens.size(0)).bool()
            else:
                num_tokens = tokens.ne(self.pad).sum(1) - encoder_out["prompt_lengths"] - 1
                done = ~tokens.eq(model.mask).any(1) & ~AbsorbingDiffusion.may_change_unmasked(
                    num_tokens, decoder_out.step, self.max_iter, self.strategy
                )
            for local in done.nonzero().view(-1).tolist():
                index = int(active[local])
                if finals[index] is None:
                    history = [h[local] for h in decoder_out.history] if self.retain_history else None
                    finals[index] = (
                        tokens[local], decoder_out.output_scores[local], decoder_out.step, history
                    )
            if done.all():
                break
            if self.keep_finished:
                continue
            keep = (~done).nonzero().view(-1)
            active = active[keep]
            encoder_out = model.reorder_encoder_out(encoder_out, keep)
            decoder_out = decoder_out._replace(
                output_tokens=tokens[keep],
                output_scores=decoder_out.output_scores[keep],
                history=[h[keep] for h in decoder_out.history] if self.retain_history else None,
            )
        return finals

    def select(self, hypos):
        """Order one sentence's candidates best-first.

        ``score``: by mean token log-prob. ``mbr-bleu`` / ``mbr-chrf``: minimum Bayes
        risk, by the mean sentence-level sacreBLEU / chrF of a candidate against the
        other candidates (stored as ``mbr_utility``), ties broken by mean log-prob.
        """
        if self.candidate_selection == "score" or len(hypos) == 1:
            return sorted(hypos, key=lambda h: float(h["score"]), reverse=True)
        metric = sacrebleu.sentence_bleu if self.candidate_selection == "mbr-bleu" else (
            sacrebleu.sentence_chrf
        )
        texts = [self.tgt_dict.string(h["tokens"], self.post_process) for h in hypos]
        for i, hypo in enumerate(hypos):
            others = [text for j, text in enumerate(texts) if j != i]
            hypo["mbr_utility"] = sum(metric(texts[i], [o]).score for o in others) / len(others)
        return sorted(
            hypos, key=lambda h: (h["mbr_utility"], float(h["score"])), reverse=True
        )
