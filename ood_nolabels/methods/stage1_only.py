"""Stage 1 alone: pseudo-labels and clustering metrics, no OOD scoring."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.base import Method, RunResult
from ood_nolabels.methods.pseudo_labels.stage1_clusters import Stage1Clusters


def stage1_source(config: DictConfig, method: str) -> Stage1Clusters:
    """The ``pseudo_labels=stage1`` source that ``method`` runs, or an error naming the fix."""
    source = instantiate(config)
    if not isinstance(source, Stage1Clusters):
        raise ValueError(
            f"method={method} runs stage 1 itself: it needs pseudo_labels=stage1, got "
            f"{type(source).__name__}"
        )
    return source


class Stage1Only(Method):
    """The stage-1 pipeline (``clusters``: the ``pseudo_labels=stage1`` source) up to
    ``stage1.stop_after``."""

    def __init__(self, clusters: DictConfig) -> None:
        self.source = stage1_source(clusters, "stage1_only")

    def preflight(self, runtime: Runtime) -> None:
        self.source.check_clustering(runtime)

    def run(self, runtime: Runtime) -> RunResult:
        clusters, labels = self.source.cluster(runtime)
        if labels is None:
            return RunResult(clusters.metrics)
        return RunResult(
            clusters.metrics,
            train_labels=labels.labels,
            num_clusters=labels.num_clusters,
            k_choice=labels.k_choice,
        )
