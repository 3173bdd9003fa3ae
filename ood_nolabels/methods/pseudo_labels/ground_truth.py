"""The supervised upper bound (Fort et al.): the real class labels as pseudo-labels."""

from __future__ import annotations

import torch

from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.pseudo_labels.base import AUTO, PseudoLabels, PseudoLabelSource


class GroundTruthLabels(PseudoLabelSource):
    """The normal set's class labels renumbered 0..C-1; K must equal C (``K=auto``: C)."""

    def classes(self, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
        """``(class ids, labels renumbered 0..C-1)`` of the normal training images."""
        truth = runtime.datamodule.train_labels()
        if truth is None:
            raise ValueError(
                "pseudo_labels=ground_truth needs a labeled normal dataset (class subfolders, "
                "or a dataset with labels)"
            )
        return torch.unique(truth, return_inverse=True)

    def preflight(self, runtime: Runtime) -> None:
        classes, _ = self.classes(runtime)
        if self.num_clusters != AUTO and self.num_clusters != len(classes):
            raise ValueError(
                f"the normal set has {len(classes)} classes but K={self.num_clusters}; set "
                f"K={len(classes)} (or K=auto)"
            )
        super().preflight(runtime)

    def labels(self, runtime: Runtime) -> PseudoLabels:
        classes, labels = self.classes(runtime)
        return PseudoLabels(labels, len(classes))
