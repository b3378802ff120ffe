"""Lets torch >= 2.6 (``weights_only=True`` by default) load fairseq checkpoints.

fairseq's ``checkpoint_utils`` calls ``torch.load`` without ``weights_only``. Its
checkpoints hold numpy arrays and scalars (in the trainer's extra state) besides
tensors, and checkpoints from older fairseq releases (the XLM-R archives) hold
an ``argparse.Namespace``. These few globals, and nothing that can run code,
are registered as safe when the plugin is imported, so ``fairseq-generate`` and
``fairseq-interactive`` need no environment variable.
"""

import argparse

import numpy as np
import torch

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
