"""Where the pseudo-labels of the normal training set come from (the ``pseudo_labels`` group).

Every source is configured as a Hydra partial and called as ``source(runtime)``; it returns
:class:`PseudoLabels` over the normal training images in dataset order, with labels in ``[0, K)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class PseudoLabels(NamedTuple):
    labels: torch.Tensor
    metrics: dict[str, float]
