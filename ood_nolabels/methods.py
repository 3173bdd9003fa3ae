"""The methods a run can execute, selected with the ``method`` config group.

Each method takes the :class:`RunContext` and returns the run's metrics. Configs reference them
as Hydra partials (``_target_: ood_nolabels.methods.<name>``, ``_partial_: true``).
"""

from __future__ import annotations

from hydra.utils import instantiate

from ood_nolabels.clustering.pipeline import ClusteringPipeline
from ood_nolabels.runner import RunContext


def dn2(ctx: RunContext) -> dict[str, float]:
    """DN2 baseline: kNN (or one-Gaussian Mahalanobis) on raw pretrained features."""
    return ctx.evaluate(instantiate(ctx.cfg.backbone))


def clustering(ctx: RunContext) -> dict[str, float]:
    """Stage 1 only (up to ``clustering.stop_after``): pseudo-labels and clustering metrics."""
    return ClusteringPipeline(ctx, ctx.cfg.clustering, ctx.cfg.K).run().metrics


def scan_features(ctx: RunContext) -> dict[str, float]:
    """The paper's "SCAN features" baseline: score with the final clustering model's features.

    Mahalanobis uses the pseudo-labels as classes.
    """
    result = ClusteringPipeline(ctx, ctx.cfg.clustering, ctx.cfg.K).run()
    return result.metrics | ctx.evaluate(result.backbone, train_labels=result.pseudo_labels)
