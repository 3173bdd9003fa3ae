"""Where a detector draws the line between normal and OOD: a threshold per scorer."""

from __future__ import annotations

import math

import torch

NORMAL_KEEP = 0.95  # the default threshold keeps 95 % of the normal test images


def threshold_keeping(normal_scores: torch.Tensor, keep: float) -> float:
    """The lowest score at or below which at least a fraction ``keep`` of ``normal_scores`` lie.

    Images scoring above it are flagged OOD, so at most ``1 - keep`` of the normal test images
    were flagged in the run.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"the kept fraction of normal images must be in (0, 1], got {keep}")
    ordered = torch.sort(torch.as_tensor(normal_scores).flatten()).values
    if len(ordered) == 0:
        raise ValueError("no normal test scores to set a threshold from")
    position = math.ceil(round(keep * len(ordered), 9)) - 1  # round: 0.95 * 100 = 95.000...01
    return float(ordered[max(position, 0)])
