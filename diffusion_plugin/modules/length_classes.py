"""Length classes of the length heads: class k means k+1 target tokens (``</s>`` not
counted), the one place where a class and a token count are converted."""

from torch import Tensor


def target_lengths(target: Tensor, pad: int) -> Tensor:
    """Target tokens (B,) of ``target </s>`` (B, T) right-padded, ``</s>`` not counted."""
    return target.ne(pad).sum(1) - 1


def length_targets(target: Tensor, pad: int, num_classes: int) -> Tensor:
    """Length classes (B,) of ``target </s>`` (B, T) right-padded: k+1 tokens -> class k.

    Lengths beyond the last of ``num_classes`` classes are clipped to it (an empty
    target to class 0).
    """
    return (target_lengths(target, pad) - 1).clamp(0, num_classes - 1)


def class_lengths(classes: Tensor) -> Tensor:
    """Target token counts of length classes (any shape): class k -> k+1 tokens."""
    return classes + 1


def classes_of_lengths(lengths: Tensor) -> Tensor:
    """Length classes (any shape) of target token counts: k+1 tokens -> class k (an
    empty target gives -1, outside every head)."""
    return lengths - 1


def most_likely_lengths(length_logits: Tensor, count: int) -> Tensor:
    """The ``count`` most likely target lengths (B, count), best first, of length
    logits (B, C)."""
    return class_lengths(length_logits.topk(count, dim=-1).indices)
