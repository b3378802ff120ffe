"""Lets torch >= 2.6 (``weights_only=True`` by default) load fairseq checkpoints, and
refuses a checkpoint file that is cut short, damaged, not a checkpoint at all, or
trained on other data.

fairseq's ``checkpoint_utils`` calls ``torch.load`` without ``weights_only``. Its
checkpoints hold numpy arrays and scalars (in the trainer's extra state) besides
tensors, and checkpoints from older fairseq releases (the XLM-R archives) hold
an ``argparse.Namespace``. These few globals, and nothing that can run code,
are registered as safe when the plugin is imported, so ``fairseq-generate`` and
``fairseq-interactive`` need no environment variable.

Every checkpoint fairseq writes goes through ``checkpoint_utils.torch_persistent_save``;
the plugin adds a CRC-32 of each model and optimizer tensor (``tensor_checksums``).
Every checkpoint fairseq reads (``--path``, ``--restore-file``,
``--finetune-from-model``, the hub interface) goes through
``checkpoint_utils.load_checkpoint_to_cpu``; the plugin wraps it so that an empty
file, a zip archive without its central directory (an interrupted save or copy),
a file torch cannot read, a tensor that differs from its checksum or holds NaN/Inf
is one ``CheckpointError`` naming the file and the newest intact checkpoint beside
it, and the model options of checkpoints saved before ``--bf16-autocast``
(``cpu_bf16``, ``cuda_bf16``; in ``--model-overrides`` too) become that one flag.
``checkpoint_utils.load_checkpoint`` (how fairseq-train resumes) is wrapped so that a
``--restore-file`` that does not exist is an error, not a silent start from update 0,
and the checkpoint's data fingerprint is checked against the task's data
(``PromptedTranslationTask.check_data_identity``).
"""

import argparse
import contextvars
import glob
import os
import pickle
import zipfile
import zlib

import numpy as np
import torch
from fairseq import checkpoint_utils
from omegaconf import open_dict

from diffusion_plugin.constants import CHECKPOINT_PATH_KEY

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

CHECKSUMS_KEY = "tensor_checksums"
"""Top-level key of a saved checkpoint: {"model.NAME" / "optimizer.PATH": CRC-32}."""

LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
"""How a checkpoint in torch's legacy (non-zip) format starts (pickle of its magic number)."""

fairseq_load_checkpoint_to_cpu = checkpoint_utils.load_checkpoint_to_cpu
fairseq_load_checkpoint = checkpoint_utils.load_checkpoint
fairseq_torch_persistent_save = checkpoint_utils.torch_persistent_save

RESUMING_TASK = contextvars.ContextVar("resuming_task", default=None)
"""(task, fine_tuning) while fairseq-train loads the checkpoint it resumes or starts from."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names it and the fix."""


def named_tensors(state):
    """(name, tensor) of the model's and the optimizer's tensors in a checkpoint state."""

    def walk(prefix, value):
        if torch.is_tensor(value):
            yield prefix, value
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                yield from walk(f"{prefix}.{key}", value[key])
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                yield from walk(f"{prefix}.{index}", item)

    yield from walk("model", state.get("model") or {})
    yield from walk("optimizer", state.get("last_optimizer_state") or {})


def tensor_checksum(tensor: torch.Tensor) -> int:
    """CRC-32 of the tensor's bytes."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return zlib.crc32(data)


def torch_persistent_save(obj, filename, async_write: bool = False):
    """fairseq's save; a checkpoint state gets the checksums of its tensors."""
    if isinstance(obj, dict) and "model" in obj:
        obj = {**obj, CHECKSUMS_KEY: {name: tensor_checksum(t) for name, t in named_tensors(obj)}}
    return fairseq_torch_persistent_save(obj, filename, async_write)


def damage(state) -> str:
    """What is wrong with the tensors of a loaded checkpoint state ('' if nothing): those
    that differ from their saved checksums, or model tensors holding NaN/Inf."""
    saved = state.get(CHECKSUMS_KEY)
    if saved:
        changed = [name for name, t in named_tensors(state) if name in saved and tensor_checksum(t) != saved[name]]
        if changed:
            return f"{len(changed)} tensor(s) differ from the checksums saved with it ({', '.join(changed[:3])})"
    not_finite = [
        name for name, t in named_tensors(state)
        if name.startswith("model.") and t.is_floating_point() and not torch.isfinite(t).all()
    ]
    if not_finite:
        return f"{len(not_finite)} model tensor(s) hold NaN or Inf ({', '.join(not_finite[:3])})"
    return ""


def file_problem(path) -> str:
    """Why ``path`` cannot be a torch checkpoint judging by its bytes ('' if it may be)."""
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_TORCH_MAGIC))
    if head == b"":
        return "is empty (an interrupted save or copy)"
    if head.startswith(b"PK"):
        return "" if zipfile.is_zipfile(path) else "is truncated (an interrupted save or copy)"
    if head == LEGACY_TORCH_MAGIC:
        return ""
    return "is not a checkpoint (neither torch's zip format nor its legacy format)"


def read_checkpoint(path, arg_overrides=None, load_on_all_ranks=False):
    """fairseq's ``load_checkpoint_to_cpu``; a file that cannot be read or whose tensors
    are damaged is a CheckpointError whose message names it."""
    problem = file_problem(path) if os.path.isfile(path) else ""
    state = None
    if not problem:
        try:
            state = fairseq_load_checkpoint_to_cpu(path, arg_overrides, load_on_all_ranks)
        except (pickle.UnpicklingError, EOFError, RuntimeError, UnicodeDecodeError, zipfile.BadZipFile) as error:
            if not os.path.isfile(path):
                raise
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            problem = f"cannot be read by torch.load ({type(error).__name__}: {reason[:120]})"
    if state is not None and not problem:
        problem = damage(state)
        if problem:
            problem = f"is damaged: {problem}"
    return state, problem


def newest_intact_checkpoint(path):
    """The newest other checkpoint*.pt beside ``path`` that reads without a problem, or None."""
    siblings = glob.glob(os.path.join(os.path.dirname(os.path.abspath(path)), "checkpoint*.pt"))
    siblings = [p for p in siblings if not os.path.samefile(p, path)] if os.path.exists(path) else siblings
    for candidate in sorted(siblings, key=os.path.getmtime, reverse=True):
        if not read_checkpoint(candidate)[1]:
            return os.path.abspath(candidate)
    return None


def checkpoint_error(path, problem) -> CheckpointError:
    """One error naming ``path``, what is wrong with it, and the checkpoint to use instead."""
    size = os.path.getsize(path)
    message = f"checkpoint {path} ({size:,} bytes) {problem}: "
    intact = newest_intact_checkpoint(path)
    if intact is not None:
        message += (
            f"load the newest intact checkpoint, {intact} (fairseq-train: --restore-file "
            f"{intact}; fairseq-generate: --path {intact}), or copy the file again"
        )
    else:
        message += "copy it again or load another checkpoint (no intact checkpoint*.pt beside it)"
    return CheckpointError(message)


def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
    """fairseq's ``load_checkpoint_to_cpu``; a file that is not an intact checkpoint is one
    CheckpointError naming it, and while fairseq-train resumes, the checkpoint's data
    fingerprint must match the task's."""
    overrides = dict(arg_overrides or {})
    old_overrides = [overrides.pop(name) for name in OLD_BF16_OPTIONS if name in overrides]
    if old_overrides:
        overrides.setdefault("bf16_autocast", any(old_overrides))
    state, problem = read_checkpoint(path, overrides if arg_overrides is not None else None, load_on_all_ranks)
    if problem:
        raise checkpoint_error(path, problem)
    upgrade_bf16_options(state.get("cfg"), overrides)
    state["task_state"] = {**(state.get("task_state") or {}), CHECKPOINT_PATH_KEY: os.path.abspath(path)}
    resuming = RESUMING_TASK.get()
    if resuming is not None and hasattr(resuming[0], "check_data_identity"):
        task, fine_tuning = resuming
        task.check_data_identity(state["task_state"], dictionary_only=fine_tuning)
    return state


def load_checkpoint(cfg, trainer, **passthrough_args):
    """fairseq's ``load_checkpoint`` (fairseq-train's resume); a ``--restore-file`` other
    than the default that does not exist is an error naming where it was looked for."""
    restore = cfg.restore_file
    if restore != "checkpoint_last.pt" and "://" not in restore:
        suffix = trainer.checkpoint_suffix or ""
        path = restore.replace(".pt", suffix + ".pt") if suffix else restore
        if not os.path.isfile(path):
            in_save_dir = os.path.abspath(os.path.join(cfg.save_dir, os.path.basename(path)))
            hint = (
                f"; to resume from the checkpoint in --save-dir, pass --restore-file {in_save_dir}"
                if os.path.isfile(in_save_dir) else "; give an existing checkpoint file"
            )
            raise FileNotFoundError(
                f"--restore-file {restore} not found (looked for {os.path.abspath(path)}; a "
                f"relative path is read from the current folder, {os.getcwd()}){hint}"
            )
    last = os.path.join(cfg.save_dir, f"checkpoint_last{trainer.checkpoint_suffix}.pt")
    fine_tuning = cfg.reset_dataloader or (cfg.finetune_from_model is not None and not os.path.exists(last))
    token = RESUMING_TASK.set((trainer.task, fine_tuning))
    try:
        return fairseq_load_checkpoint(cfg, trainer, **passthrough_args)
    finally:
        RESUMING_TASK.reset(token)


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
checkpoint_utils.load_checkpoint = load_checkpoint
checkpoint_utils.torch_persistent_save = torch_persistent_save
