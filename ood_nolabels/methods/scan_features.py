"""The paper's "SCAN features" baseline: score with the final clustering model's features."""

from __future__ import annotations

from omegaconf import DictConfig

from ood_nolabels.clustering.pipeline import cluster_normal_images
from ood_nolabels.detector import Detector
from ood_nolabels.methods import RunResult
from ood_nolabels.methods.evaluate import build_evaluation, evaluate_model
from ood_nolabels.runtime import Runtime


def scan_features(
    runtime: Runtime, clustering: DictConfig, scorers: DictConfig, num_clusters: int
) -> RunResult:
    """Stage 1, then kNN / Mahalanobis (over the pseudo-classes) on its backbone's features."""
    clusters = cluster_normal_images(runtime, clustering, num_clusters)
    evaluation = build_evaluation(runtime, clusters.backbone, scorers, clusters.pseudo_labels)
    result = evaluate_model(runtime, evaluation, clusters.backbone)
    detector = Detector.from_evaluation(
        clusters.backbone,
        clustering.simclr.backbone,
        evaluation,
        scorers,
        clusters.pseudo_labels,
        num_clusters,
        [stage.name for stage in clusters.stages],
    )
    return RunResult(clusters.metrics | result.named(), result, detector, clusters.pseudo_labels)
