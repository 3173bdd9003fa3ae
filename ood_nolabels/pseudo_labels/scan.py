"""The paper's pseudo-labels: stage 1 (SimCLR -> SCAN -> self-label), cached per stage."""

from __future__ import annotations

from omegaconf import DictConfig

from ood_nolabels.clustering.pipeline import cluster_normal_images
from ood_nolabels.pseudo_labels import PseudoLabels
from ood_nolabels.runtime import Runtime


def scan_clusters(runtime: Runtime, clustering: DictConfig, num_clusters: int) -> PseudoLabels:
    """Stage 1's final cluster ids (``clustering.stop_after`` must be ``scan`` or ``selflabel``)."""
    if clustering.stop_after not in ("scan", "selflabel"):
        raise ValueError(
            f"pseudo_labels=scan needs clustering.stop_after=scan or selflabel, "
            f"got {clustering.stop_after!r}"
        )
    result = cluster_normal_images(runtime, clustering, num_clusters)
    return PseudoLabels(result.pseudo_labels, result.metrics)
