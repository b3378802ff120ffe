"""Lets torch >= 2.6 (``weights_only=True`` by default) load fairseq checkpoints,
and names a cut-short checkpoint file.

fairseq's ``checkpoint_utils`` calls ``torch.load`` without ``weights_only``. Its
checkpoints hold numpy arrays and scalars (in the trainer's extra state) besides
tensors, and checkpoints from older fairseq releases (the XLM-R archives) hold
an ``argparse.Namespace``. These few globals, and nothing that can run code,
are registered as safe when the plugin is imported, so ``fairseq-generate`` and
``fairseq-interactive`` need no environment variable.

Every checkpoint fairseq reads (``--path``, ``--restore-file``,
``--finetune-from-model``, the hub interface) goes through
``checkpoint_utils.load_checkpoint_to_cpu``; the plugin wraps it so that an
empty file or a zip archive without its central directory (a save or copy that
was interrupted) is one error naming the file, not a zip reader's traceback,
and the model options of checkpoints saved before ``--bf16-autocast`` (``cpu_bf16``,
``cuda_bf16``; in ``--model-overrides`` too) become that one flag.
"""

import argparse
import os
import zipfile

import numpy as np
import torch
from fairseq import checkpoint_utils
from omegaconf import open_dict

NUMPY_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]

FAIRSEQ_CHECKPOINT_GLOBALS = [
    argparse.Namespace,
    np.ndarray,
    np.dtype,
    NUMPY_RECONSTRUCT,
    (NUMPY_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
    *(type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"),
]

torch.serialization.add_safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)

fairseq_load_checkpoint_to_cpu = checkpoint_utils.load_checkpoint_to_cpu


def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
    """fairseq's ``load_checkpoint_to_cpu``; a local file that is empty or a zip archive
    cut short is one ValueError naming it."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"" or (head == b"PK" and not zipfile.is_zipfile(path)):
            raise ValueError(
                f"checkpoint {path} is truncated ({os.path.getsize(path):,} bytes; an "
                "interrupted save or copy): copy it again or load another checkpoint"
            )
    overrides = dict(arg_overrides or {})
    old_overrides = [overrides.pop(name) for name in OLD_BF16_OPTIONS if name in overrides]
    if old_overrides:
        overrides.setdefault("bf16_autocast", any(old_overrides))
    state = fairseq_load_checkpoint_to_cpu(
        path, overrides if arg_overrides is not None else None, load_on_all_ranks
    )
    upgrade_bf16_options(state.get("cfg"), overrides)
    return state


OLD_BF16_OPTIONS = ("cpu_bf16", "cuda_bf16")


def upgrade_bf16_options(cfg, overrides):
    """A saved model config with ``cpu_bf16`` / ``cuda_bf16`` gets ``bf16_autocast``:
    on if either was (or as ``overrides`` say), and loses the two."""
    model = cfg.get("model") if cfg is not None else None
    if model is None or not any(name in model for name in OLD_BF16_OPTIONS):
        return
    with open_dict(model):
        old = [bool(model.pop(name)) for name in OLD_BF16_OPTIONS if name in model]
        model.bf16_autocast = overrides.get("bf16_autocast", any(old))


checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu
