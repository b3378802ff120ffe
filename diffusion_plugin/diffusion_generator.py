"""Length-beam iterative generator: RDM's reverse process over ``<s> prompt <mask>* </s>``."""

import logging

import torch
from fairseq import utils

from diffusion_plugin.absorbing_diffusion import ReverseStrategy

logger = logging.getLogger(__name__)


class DiffusionGenerator:
    """Decodes with a :class:`DiffusionXLMRModel` through fairseq's NAT protocol.

    For every prompt, ``beam_size`` target lengths (the length head's top-k) each get
    a canvas; all canvases of a batch are denoised together for ``max_iter`` steps
    (a canvas leaves the batch as soon as nothing in it is masked, which for the
    RDM schedules means it is final), and the candidate with the highest mean
    token log-prob is returned first.
    """

    def __init__(
        self,
        tgt_dict,
        max_iter: int = 10,
        beam_size: int = 1,
        strategy: str = "reparam-uncond-deterministic-cosine",
        retain_history: bool = False,
        max_positions: int = 512,
    ):
        if max_iter < 1:
            raise ValueError(f"--iter-decode-max-iter must be >= 1, got {max_iter}")
        if beam_size < 1:
            raise ValueError(f"--iter-decode-with-beam must be >= 1, got {beam_size}")
        self.tgt_dict = tgt_dict
        self.pad = tgt_dict.pad()
        self.eos = tgt_dict.eos()
        self.max_iter = max_iter
        self.beam_size = beam_size
        self.strategy = ReverseStrategy.parse(strategy)
        self.retain_history = retain_history
        self.max_positions = max_positions

    def candidate_lengths(self, model, encoder_out):
        """Top-``beam_size`` lengths clipped to the room left after each prompt: (B, beam)."""
        lengths = model.predict_lengths(encoder_out, self.beam_size)
        room = self.max_positions - encoder_out["prompt_lengths"] - 1
        if (room < 1).any():
            row = int((room < 1).nonzero()[0, 0])
            raise ValueError(
                f"prompt {row} of the batch has {int(encoder_out['prompt_lengths'][row])} tokens "
                f"and leaves no room for a target within --max-positions {self.max_positions}"
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
        lengths = self.candidate_lengths(model, encoder_out).view(-1)
        rows = utils.new_arange(src_tokens, batch_size).repeat_interleave(self.beam_size)
        encoder_out = model.reorder_encoder_out(encoder_out, rows)
        decoder_out = model.initialize_output_tokens(
            encoder_out, encoder_out["src_tokens"], target_lengths=lengths
        )
        decoder_out = decoder_out._replace(
            max_step=self.max_iter,
            history=[decoder_out.output_tokens.clone()] if self.retain_history else None,
        )

        num_candidates = rows.numel()
        final_tokens = [None] * num_candidates
        final_scores = [None] * num_candidates
        final_steps = [0] * num_candidates
        final_history = [None] * num_candidates
        active = utils.new_arange(src_tokens, num_candidates)
        for _ in range(self.max_iter):
            decoder_out = model.forward_decoder(decoder_out, encoder_out, strategy=self.strategy)
            done = ~decoder_out.output_tokens.eq(model.mask).any(1)
            if decoder_out.step == self.max_iter:
                done = torch.ones_like(done)
            for local in done.nonzero().view(-1).tolist():
                index = int(active[local])
                final_tokens[index] = decoder_out.output_tokens[local]
                final_scores[index] = decoder_out.output_scores[local]
                final_steps[index] = decoder_out.step
                if self.retain_history:
                    final_history[index] = [h[local] for h in decoder_out.history]
            if done.all():
                break
            keep = (~done).nonzero().view(-1)
            active = active[keep]
            encoder_out = model.reorder_encoder_out(encoder_out, keep)
            decoder_out = decoder_out._replace(
                output_tokens=decoder_out.output_tokens[keep],
                output_scores=decoder_out.output_scores[keep],
                history=[h[keep] for h in decoder_out.history] if self.retain_history else None,
            )

        prompt_lengths = src_tokens.ne(self.pad).sum(1).repeat_interleave(self.beam_size)
        finalized = []
        for sent in range(batch_size):
            hypos = []
            for index in range(sent * self.beam_size, (sent + 1) * self.beam_size):
                start, length = int(prompt_lengths[index]), int(lengths[index])
                tokens = final_tokens[index][start : start + length + 1]
                positional_scores = final_scores[index][start : start + length + 1].clone()
                positional_scores[-1] = 0.0
                hypo = {
                    "tokens": tokens,
                    "positional_scores": positional_scores,
                    "score": positional_scores[:-1].mean(),
                    "hypo_attn": None,
                    "alignment": None,
                    "steps": final_steps[index],
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
                        for h in final_history[index]
                    ]
                hypos.append(hypo)
            hypos.sort(key=lambda h: float(h["score"]), reverse=True)
            finalized.append(hypos)
        return finalized
