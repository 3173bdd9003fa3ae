"""Files that only ever appear whole, and weights that are never saved as garbage."""

from __future__ import annotations

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


def atomic_save(obj: object, path: Path) -> Path:
    """``torch.save`` to a temporary name beside ``path``, then one rename: readers see the old
    file, the new one, or none, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(obj, temporary)
    temporary.replace(path)
    return path
