"""Stage 1 alone: pseudo-labels and clustering metrics, no OOD scoring."""

from __future__ import annotations

from omegaconf import DictConfig

from ood_nolabels.clustering.pipeline import cluster_normal_images
from ood_nolabels.methods import RunResult
from ood_nolabels.runtime import Runtime


def clustering_only(runtime: Runtime, clustering: DictConfig, num_clusters: int) -> RunResult:
    """SimCLR -> mining -> SCAN -> self-label up to ``clustering.stop_after``."""
    return RunResult(cluster_normal_images(runtime, clustering, num_clusters).metrics)
