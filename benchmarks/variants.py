"""Slower variants of the generator that give the same tokens, for measuring what each
saving of the default is worth (bench_speed.py; tests/test_speed_options.py checks the
tokens are the same)."""

from diffusion_plugin.diffusion_generator import DiffusionGenerator

LM_HEAD_POSITIONS = ("undecided", "target", "all")
"""Where a decoding step runs the LM head (MeasuredGenerator's ``lm_head_positions``)."""


class MeasuredGenerator(DiffusionGenerator):
    """DiffusionGenerator with the savings switched off one by one.

    ``lm_head_positions``: where each step runs the LM head and its softmax: the
    positions the strategy may still change (``undecided``, the default's), every target
    position (``target``) or the whole sequence (``all``). ``keep_finished``: finished
    canvases stay in the batch until the last one finishes. ``separate_length_candidates``:
    one batch per candidate slot instead of all candidates in one.
    """

    def __init__(self, tgt_dict, *args, lm_head_positions="undecided", keep_finished=False,
                 separate_length_candidates=False, **kwargs):
        super().__init__(tgt_dict, *args, **kwargs)
        if lm_head_positions not in LM_HEAD_POSITIONS:
            raise ValueError(f"lm_head_positions {lm_head_positions!r}: choose from {LM_HEAD_POSITIONS}")
        self.lm_head_positions = lm_head_positions
        self.keep_finished = keep_finished
        self.separate_length_candidates = separate_length_candidates

    def candidate_groups(self, candidates, batch_size):
        if self.separate_length_candidates:
            return candidates.view(batch_size, self.num_candidates).t()
        return super().candidate_groups(candidates, batch_size)

    def leave_batch(self, done):
        if self.keep_finished:
            return done.new_ones(done.shape).nonzero().view(-1)
        return super().leave_batch(done)

    def head_positions(self, tokens, decodable):
        if self.lm_head_positions == "undecided":
            return super().head_positions(tokens, decodable)
        return decodable

    def step_logits(self, model, canvases, head_positions):
        if self.lm_head_positions == "all" and not (
            self.decoding.guidance_scale > 0 or self.decoding.prompt_cache
        ):
            logits = model.logits(canvases.tokens, None, canvases.prompt_lengths)[head_positions]
            return logits, canvases.cache
        return super().step_logits(model, canvases, head_positions)
