"""Files that only ever appear whole, and weights that are never saved as garbage."""

from __future__ import annotations

import errno
from pathlib import Path

import torch


def check_finite(obj: object, path: Path) -> None:
    """Refuse to keep NaN or inf weights / features: a diverged stage must not be reused.

    ``obj`` is a tensor or a dict of tensors (a state dict). A tensor that is +inf everywhere is
    a "not measured yet" sentinel (e.g. the loss buffer of an unused SCAN head selection), not a
    diverged value, and passes.
    """
    tensors = obj.values() if isinstance(obj, dict) else [obj]
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            if not torch.isfinite(tensor).all() and not bool((tensor == float("inf")).all()):
                raise FloatingPointError(
                    f"{path.parent.name}/{path.name} would hold NaN or inf values: the stage "
                    "diverged. Lower its optimizer.lr (or check the input data) and rerun."
                )


class StorageError(OSError):
    """A file could not be written: the disk is full or the folder is not writable."""


def storage_error(error: BaseException, path: Path) -> StorageError | None:
    """``error`` from writing ``path`` as a :class:`StorageError` naming the cause, the path and
    the fix; None when it is something else. torch reports a full disk as a ``RuntimeError``
    ("unexpected pos", "file write failed")."""
    text = str(error)
    full = getattr(error, "errno", None) == errno.ENOSPC or any(
        marker in text for marker in ("No space left", "unexpected pos", "file write failed")
    )
    if full:
        return StorageError(
            errno.ENOSPC,
            f"no space left on the device while writing {path}. Free space, or point "
            "paths.artifact_dir (OOD_ARTIFACT_DIR) and the run directory at a larger disk, then "
            "rerun: finished stages are kept and the interrupted one resumes",
        )
    if isinstance(error, PermissionError):
        return StorageError(
            errno.EACCES,
            f"permission denied writing {path}: make its folder writable, or point "
            "paths.artifact_dir (OOD_ARTIFACT_DIR) / the run directory elsewhere",
        )
    return None


def atomic_save(obj: object, path: Path) -> Path:
    """``torch.save`` to a temporary name beside ``path``, then one rename: readers see the old
    file, the new one, or none, never half of one. A full disk or a folder that is not writable
    raises a :class:`StorageError` that says so, with the path."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, temporary)
        temporary.replace(path)
    except (OSError, RuntimeError) as error:
        temporary.unlink(missing_ok=True)
        translated = storage_error(error, path)
        if translated is None:
            raise
        raise translated from error
    return path
