"""Where the pseudo-labels of the normal training set come from (the ``pseudo_labels`` group).

Every source is a function ``(ctx, backbone) -> (labels, metrics)`` over the normal training
images in dataset order, with labels in ``[0, K)``. ``backbone`` is the pretrained backbone that
will be finetuned (k-means clusters its features).
"""

from __future__ import annotations

import logging

import torch

from ood_nolabels.clustering.metrics import cluster_metrics
from ood_nolabels.clustering.pipeline import ClusteringPipeline, kmeans_clusters, prefixed
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.runner import RunContext

log = logging.getLogger(__name__)

Labels = tuple[torch.Tensor, dict[str, float]]


def scan(ctx: RunContext, backbone: Backbone) -> Labels:
    """The paper: SimCLR -> SCAN -> self-label clusters (stage 1, cached artifacts)."""
    result = ClusteringPipeline(ctx, ctx.cfg.clustering, ctx.cfg.K).run()
    if result.pseudo_labels is None:
        raise ValueError("pseudo_labels=scan needs clustering.stop_after=scan or selflabel")
    return result.pseudo_labels, result.metrics


def kmeans(ctx: RunContext, backbone: Backbone, n_init: int = 10) -> Labels:
    """The paper's ablation: k-means with K clusters on the pretrained features."""
    features = ctx.extract(backbone, backbone.transform(), [NORMAL_TRAIN])[NORMAL_TRAIN]
    labels = kmeans_clusters(features, ctx.cfg.K, ctx.cfg.seed, n_init)
    truth = ctx.datamodule.train_labels()
    metrics = {} if truth is None else prefixed(cluster_metrics(labels, truth), "cluster")
    ctx.log_metrics(metrics)
    return labels, metrics


def ground_truth(ctx: RunContext, backbone: Backbone) -> Labels:
    """The supervised upper bound (Fort et al.): the real class labels, renumbered 0..C-1."""
    truth = ctx.datamodule.train_labels()
    if truth is None:
        raise ValueError("pseudo_labels=ground_truth needs a labeled normal dataset")
    classes, labels = torch.unique(truth, return_inverse=True)
    if len(classes) != ctx.cfg.K:
        raise ValueError(
            f"the normal set has {len(classes)} classes but K={ctx.cfg.K}; set K={len(classes)}"
        )
    return labels, {}
