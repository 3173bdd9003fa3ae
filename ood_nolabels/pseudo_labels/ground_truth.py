"""The supervised upper bound (Fort et al.): the real class labels as pseudo-labels."""

from __future__ import annotations

import torch

from ood_nolabels.pseudo_labels import PseudoLabels
from ood_nolabels.runtime import Runtime


def true_classes(runtime: Runtime, num_clusters: int) -> PseudoLabels:
    """The normal set's class labels renumbered 0..C-1; C must equal K."""
    truth = runtime.datamodule.train_labels()
    if truth is None:
        raise ValueError("pseudo_labels=ground_truth needs a labeled normal dataset")
    classes, labels = torch.unique(truth, return_inverse=True)
    if len(classes) != num_clusters:
        raise ValueError(
            f"the normal set has {len(classes)} classes but K={num_clusters}; set K={len(classes)}"
        )
    return PseudoLabels(labels, {})
