"""The paper's "SCAN features" baseline: score with the final stage-1 model's features."""

from __future__ import annotations

from omegaconf import DictConfig

from ood_nolabels.engine.evaluation import build_evaluation, evaluate_model
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.base import Method, RunResult, build_detector
from ood_nolabels.methods.pseudo_labels.stage1_clusters import Stage1Clusters
from ood_nolabels.methods.stage1_only import stage1_source


class ScanFeatures(Method):
    """Stage 1 (``clusters``: the ``pseudo_labels=stage1`` source), then kNN / Mahalanobis (over
    the pseudo-classes) on its backbone's features."""

    def __init__(self, clusters: DictConfig, scorers: DictConfig) -> None:
        self.source: Stage1Clusters = stage1_source(clusters, "scan_features")
        self.scorers = scorers

    def preflight(self, runtime: Runtime) -> None:
        self.source.check_clustering(runtime)

    def run(self, runtime: Runtime) -> RunResult:
        clusters, labels = self.source.cluster(runtime)
        pseudo_labels = None if labels is None else labels.labels
        evaluation = build_evaluation(runtime, clusters.backbone, self.scorers, pseudo_labels)
        result = evaluate_model(runtime, evaluation, clusters.backbone)
        recipe = self.source.recipe
        pretrained = recipe.get("pretext") is not None
        backbone_config = recipe.pretext if pretrained else recipe.simclr.backbone
        num_clusters = None if labels is None else labels.num_clusters
        detector = build_detector(
            clusters.backbone,
            backbone_config,
            result,
            self.scorers,
            pseudo_labels,
            num_clusters,
            [stage.name for stage in clusters.stages],
        )
        return RunResult(
            clusters.metrics | result.named(),
            result,
            detector,
            pseudo_labels,
            num_clusters=num_clusters,
            k_choice=None if labels is None else labels.k_choice,
        )
