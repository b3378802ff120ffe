"""Length-beam iterative generator: RDM's reverse process over ``<s> prompt <mask>* </s>``."""

import dataclasses
import logging
from typing import Optional

import sacrebleu
import torch
from fairseq import utils

from diffusion_plugin.absorbing_diffusion import AbsorbingDiffusion
from diffusion_plugin.decoding_config import DecodingConfig

logger = logging.getLogger(__name__)


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

    ``decoding`` holds the plugin's options (:class:`DecodingConfig`; ``options``
    override its fields by name); the other arguments are fairseq's generation options
    (``FAIRSEQ_GENERATION_OPTIONS``). :meth:`candidate_groups`, :meth:`leave_batch`
    and :meth:`decoder_step` are the hooks the speed benchmark's slower variants
    override (benchmarks/variants.py).
    """

    def __init__(
        self,
        tgt_dict,
        decoding: Optional[DecodingConfig] = None,
        max_iter: int = 10,
        beam_size: int = 1,
        retain_history: bool = False,
        max_positions: int = 512,
        temperature: float = 1.0,
        sampling: bool = False,
        force_max_iter: bool = False,
        post_process: Optional[str] = None,
        **options,
    ):
        if max_iter < 1:
            raise ValueError(f"--iter-decode-max-iter must be >= 1, got {max_iter}")
        if beam_size < 1:
            raise ValueError(f"--iter-decode-with-beam must be >= 1, got {beam_size}")
        if temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {temperature}")
        self.decoding = dataclasses.replace(decoding or DecodingConfig(), **options)
        self.strategy = self.decoding.validate()
        self.tgt_dict = tgt_dict
        self.pad = tgt_dict.pad()
        self.eos = tgt_dict.eos()
        self.max_iter = max_iter
        self.beam_size = beam_size
        self.samples_per_length = self.decoding.samples_per_length
        self.num_candidates = beam_size * self.samples_per_length
        self.retain_history = retain_history
        self.max_positions = max_positions
        self.length_beam_mode = str(self.decoding.length_beam_mode)
        self.oracle_length = self.decoding.oracle_length
        self.step_options = dict(
            strategy=self.strategy,
            temperature=temperature,
            sampling=sampling,
            confidence=str(self.decoding.unmasking_confidence),
            guidance_scale=self.decoding.guidance_scale,
            prompt_cache=self.decoding.prompt_cache,
            prompt_cache_refresh=self.decoding.prompt_cache_refresh,
            temperature_scales_scores=self.decoding.temperature_scales_scores,
        )
        self.force_max_iter = force_max_iter
        self.candidate_selection = str(self.decoding.candidate_selection)
        self.post_process = post_process

    def candidate_groups(self, candidates, batch_size):
        """The batches the candidates (batch_size * num_candidates,) are denoised in:
        all in one. Returns LongTensor (groups, group size)."""
        return candidates.unsqueeze(0)

    def leave_batch(self, done):
        """Row indices (LongTensor) of the canvases that stay in the batch after a step
        where ``done`` (bool (N,)) are finished: the unfinished ones."""
        return (~done).nonzero().view(-1)

    def decoder_step(self, model, decoder_out, encoder_out):
        """One reverse step of every canvas (the model's ``forward_decoder``)."""
        return model.forward_decoder(decoder_out, encoder_out, **self.step_options)

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
        length_scores = self.length_log_probs(encoder_out, lengths)
        rows = utils.new_arange(src_tokens, batch_size).repeat_interleave(self.num_candidates)
        candidates = utils.new_arange(src_tokens, rows.numel())
        groups = self.candidate_groups(candidates, batch_size)
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
                    "length_score": length_scores[index],
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
            hypos = self.select(hypos)
            if self.decoding.collapse_repeats:
                hypos = [self.collapse_repeats(hypo) for hypo in hypos]
            finalized.append(hypos)
        return finalized

    def length_log_probs(self, encoder_out, lengths):
        """log P(L) of each candidate's length under the length head: (N,) for the
        lengths (N,) of N = B * num_candidates canvases (-inf outside its classes)."""
        log_probs = encoder_out["length_logits"].float().log_softmax(-1)
        log_probs = log_probs.repeat_interleave(self.num_candidates, dim=0)
        classes = lengths - 1  # class c is length c + 1
        inside = (classes >= 0) & (classes < log_probs.size(-1))
        picked = log_probs.gather(1, classes.clamp(0, log_probs.size(-1) - 1).unsqueeze(1))
        return picked.squeeze(1).masked_fill(~inside, float("-inf"))

    @staticmethod
    def collapse_repeats(hypo):
        """``hypo`` with each token equal to the one before it dropped (``--collapse-repeats``;
        the final ``</s>`` is kept), its positional scores alike; its rank is unchanged."""
        tokens = hypo["tokens"]
        keep = torch.ones_like(tokens, dtype=torch.bool)
        keep[1:-1] = tokens[1:-1].ne(tokens[:-2])
        return {**hypo, "tokens": tokens[keep], "positional_scores": hypo["positional_scores"][keep]}

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
            decoder_out = self.decoder_step(model, decoder_out, encoder_out)
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
            keep = self.leave_batch(done)
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

        ``score``: by mean token log-prob. ``joint``: by the joint log-prob of the
        tokens and the length per factor, (sum_i log p_i + log P(L)) / (L + 1).
        ``mbr-bleu`` / ``mbr-chrf``: minimum Bayes risk, by the mean sentence-level
        sacreBLEU / chrF of a candidate against the other candidates (stored as
        ``mbr_utility``), ties broken by mean log-prob.
        """
        if self.candidate_selection == "score" or len(hypos) == 1:
            return sorted(hypos, key=lambda h: float(h["score"]), reverse=True)
        if self.candidate_selection == "joint":
            def joint(hypo):
                length = hypo["tokens"].numel() - 1
                return (float(hypo["positional_scores"][:-1].sum()) + float(hypo["length_score"])) / (length + 1)
            return sorted(hypos, key=joint, reverse=True)
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
