"""The paper's pseudo-labels: the clusters of stage 1 (a pretext -> SCAN -> self-label), cached
per stage. ``K=auto`` is chosen on stage 1's own mined neighbours, before SCAN trains."""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig

from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.pipelines.stage1 import (
    ClusteringResult,
    check_recipe,
    cluster_normal_images,
    mine_normal_images,
)
from ood_nolabels.methods.pseudo_labels.base import (
    PseudoLabels,
    PseudoLabelSource,
    auto_k_metrics,
)

LABELLING_STAGES = ("scan", "selflabel")


class Stage1Clusters(PseudoLabelSource):
    """Stage 1 with ``recipe`` (the ``stage1`` group) up to its ``stop_after``."""

    def __init__(
        self, recipe: DictConfig, num_clusters: int | str, auto_k: Mapping[str, int] | None = None
    ) -> None:
        super().__init__(num_clusters, auto_k)
        self.recipe = recipe

    def check_clustering(self, runtime: Runtime) -> None:
        """The recipe and K, for stage 1 run up to any ``stop_after``."""
        check_recipe(self.recipe)
        super().preflight(runtime)

    def preflight(self, runtime: Runtime) -> None:
        """As :meth:`check_clustering`, and stage 1 must reach SCAN to give labels."""
        self.check_clustering(runtime)
        if self.recipe.stop_after not in LABELLING_STAGES:
            raise ValueError(
                f"pseudo_labels=stage1 needs stage1.stop_after=scan or selflabel, "
                f"got {self.recipe.stop_after!r}"
            )

    def cluster(self, runtime: Runtime) -> tuple[ClusteringResult, PseudoLabels | None]:
        """Stage 1's result (its backbone, stages and metrics) and its pseudo-labels (None when
        it stops before SCAN)."""
        labels = runtime.datamodule.train_labels()

        def neighbors():
            return mine_normal_images(runtime, self.recipe, labels)[1]

        k, choice = self.resolve_k(runtime, neighbors)
        result = cluster_normal_images(runtime, self.recipe, k)
        result.metrics |= auto_k_metrics(choice)
        if result.pseudo_labels is None:
            return result, None
        return result, PseudoLabels(result.pseudo_labels, k, result.metrics, choice)

    def labels(self, runtime: Runtime) -> PseudoLabels:
        _, pseudo_labels = self.cluster(runtime)
        return pseudo_labels
