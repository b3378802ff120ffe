"""Slower variants of the defaults that give the same results, for measuring what each
saving is worth (bench_speed.py; tests/test_speed_options.py and
tests/test_throughput_levers.py check the results are the same)."""

from fairseq.modules.gelu import gelu as fairseq_gelu

from diffusion_plugin.diffusion_generator import DiffusionGenerator
from diffusion_plugin.models.diffusion_xlmr import gelu

# MeasuredGenerator's options, the default's value first
LM_HEAD_POSITIONS = ("undecided", "target", "all")
"""Where each step runs the LM head and its softmax: the positions the strategy may still
change, every target position or the whole sequence."""
FINISHED = ("keep", "half", "drop")
"""Finished canvases stay until the last one finishes, the unfinished ones go on alone once
at least half of the batch has finished, or finished canvases leave at once."""
LENGTH_CANDIDATES = ("auto", "one forward", "per slot")
"""All candidates in one batch up to ``ROWS_PER_FORWARD`` canvases, then one batch per
candidate slot; always one batch; or always one per slot."""


class MeasuredGenerator(DiffusionGenerator):
    """DiffusionGenerator with the savings switched off one by one (``lm_head_positions``,
    ``finished``, ``length_candidates``: see LM_HEAD_POSITIONS, FINISHED, LENGTH_CANDIDATES)."""

    def __init__(self, tgt_dict, *args, lm_head_positions="undecided", finished="keep",
                 length_candidates="auto", **kwargs):
        super().__init__(tgt_dict, *args, **kwargs)
        for name, value, choices in (("lm_head_positions", lm_head_positions, LM_HEAD_POSITIONS),
                                     ("finished", finished, FINISHED),
                                     ("length_candidates", length_candidates, LENGTH_CANDIDATES)):
            if value not in choices:
                raise ValueError(f"{name} {value!r}: choose from {choices}")
            setattr(self, name, value)

    def candidate_groups(self, candidates, batch_size):
        if self.length_candidates == "per slot":
            return candidates.view(batch_size, self.num_candidates).t()
        if self.length_candidates == "one forward":
            return candidates.unsqueeze(0)
        return super().candidate_groups(candidates, batch_size)

    def leave_batch(self, done):
        if self.finished == "drop" or (self.finished == "half" and 2 * int(done.sum()) >= done.numel()):
            return (~done).nonzero().view(-1)
        return super().leave_batch(done)

    def head_positions(self, tokens, decodable):
        return super().head_positions(tokens, decodable) if self.lm_head_positions == "undecided" else decodable

    def step_logits(self, model, canvases, head_positions):
        if self.lm_head_positions == "all" and not (self.decoding.guidance_scale > 0 or self.decoding.prompt_cache):
            logits = model.logits(canvases.tokens, None, canvases.prompt_lengths)[head_positions]
            return logits, canvases.cache
        return super().step_logits(model, canvases, head_positions)


# ---------------------------------------------------------------- training
def with_fairseq_gelu(model):
    """fairseq's gelu (an fp32 round trip of every feed-forward activation) back in every
    layer and the LM head of a DiffusionXLMRModel, in place."""
    for module in model.modules():
        if getattr(module, "activation_fn", None) is gelu:
            module.activation_fn = fairseq_gelu
    return model


def with_per_row_prompts(model):
    """Under --prompt-attention prefix, every noised row through every layer, prompt and
    target, and the joint length head from a prompt-only pass of its own, as under full
    attention (in place)."""
    forward = model.forward
    model.forward = lambda *args, prompt_rows=None, **kwargs: forward(*args, **kwargs)
    return model


def with_compiled_layers(model):
    """Every transformer layer through torch.compile (inductor, dynamic shapes), in place;
    parameter names and checkpoints stay as they are."""
    for layer in model.encoder.sentence_encoder.layers:
        layer.compile(dynamic=True)
    return model


TRAINING_VARIANTS = {
    "fairseq-gelu": with_fairseq_gelu,
    "per-row-prompts": with_per_row_prompts,
    "compiled-layers": with_compiled_layers,
}
"""Variants of the training model, by name (bench_speed.py --mode throughput's rows)."""
