"""Stage 1 of the paper: SimCLR -> neighbour mining -> SCAN -> self-label -> pseudo-labels.

With ``clustering.pretext`` (a ``backbone`` config) a pretrained backbone replaces SimCLR: its
features of the normal training images are extracted once (the cached ``features`` stage) and
neighbours are mined in them. With ``clustering.on_features`` SCAN and self-labelling then train
cluster heads on those cached vectors (``frozen_features``); otherwise they run on images
through the pretrained backbone (``scan_imagenet``: heads only with ``update_backbone: false``).

Each stage is cached on its own (:mod:`ood_nolabels.stages.cache`): a rerun with the same
upstream config loads instead of training, so sweeps over scorers or downstream settings train
stage 1 once, a K sweep trains SimCLR and mines neighbours once, and an interrupted stage resumes
from its last epoch checkpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig

from ood_nolabels.clustering.metrics import cluster_metrics, prefixed
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.runtime import Runtime
from ood_nolabels.stages.base import check_num_clusters
from ood_nolabels.stages.cache import CachedStage
from ood_nolabels.stages.features import FeatureInput, FeatureVectors, pretrained_features
from ood_nolabels.stages.mining import check_mined_features, mine, mine_features, mining_encoder
from ood_nolabels.stages.scan import train_scan
from ood_nolabels.stages.selflabel import train_selflabel
from ood_nolabels.stages.simclr import pretrain_simclr

log = logging.getLogger(__name__)

STAGES = ("simclr", "mining", "scan", "selflabel")


@dataclass
class ClusteringResult:
    """The final clustering model's backbone, its pseudo-labels (None before SCAN), metrics."""

    backbone: Backbone
    pseudo_labels: torch.Tensor | None
    metrics: dict[str, float] = field(default_factory=dict)
    stages: list[CachedStage] = field(default_factory=list)


def check_not_collapsed(
    predictions: torch.Tensor,
    num_clusters: int,
    stage: str,
    max_empty_fraction: float,
    max_cluster_share: float,
) -> None:
    """Stop when a clustering collapsed: too many empty clusters, or one swallowing the data."""
    counts = torch.bincount(predictions, minlength=num_clusters)
    empty, share = int((counts == 0).sum()), float(counts.max()) / len(predictions)
    if empty > max_empty_fraction * num_clusters or share > max_cluster_share:
        raise RuntimeError(
            f"the {stage} clustering collapsed: {empty} of K={num_clusters} clusters are empty "
            f"and the largest holds {share:.0%} of the images (limits: "
            f"clustering.collapse.max_empty_fraction={max_empty_fraction}, "
            f"max_cluster_share={max_cluster_share}). Train the stage longer or with a lower "
            "learning rate, raise its entropy_weight, or choose a smaller K."
        )


def check_stop_after(stop_after: str) -> str:
    if stop_after not in STAGES:
        raise ValueError(f"clustering.stop_after={stop_after!r}; expected one of {STAGES}")
    return stop_after


def uses_pretrained_pretext(clustering: DictConfig) -> bool:
    """Whether stage 1 starts from a pretrained backbone (``clustering.pretext``), not SimCLR."""
    return clustering.get("pretext") is not None


def mine_normal_images(
    runtime: Runtime, clustering: DictConfig, labels: torch.Tensor | None
) -> tuple[Backbone, torch.Tensor, torch.Tensor, list[CachedStage]]:
    """The pretext stage and mining: ``(backbone, neighbours, mined features, stages)``.

    Neither depends on K (a K sweep or ``K=auto`` trains them once).
    """
    if uses_pretrained_pretext(clustering):
        backbone, features, pretext_stage = pretrained_features(runtime, clustering.pretext)
        neighbors, features, mining_stage = mine_features(
            runtime, features, clustering.mining, pretext_stage, labels
        )
        return backbone, neighbors, features, [pretext_stage, mining_stage]
    images = runtime.datamodule.images[NORMAL_TRAIN]
    simclr, simclr_stage = pretrain_simclr(runtime, images, clustering.simclr)
    encoder = mining_encoder(simclr, clustering.mining.features)
    neighbors, features, mining_stage = mine(
        runtime, encoder, simclr.backbone.transform(), clustering.mining, simclr_stage, labels
    )
    return simclr.backbone, neighbors, features, [simclr_stage, mining_stage]


def cluster_normal_images(
    runtime: Runtime, clustering: DictConfig, num_clusters: int
) -> ClusteringResult:
    """Run stage 1 up to ``clustering.stop_after`` on the normal training images.

    ``clustering`` is the ``clustering`` config group; ground-truth labels, when the dataset has
    them, only measure the stages (``cluster/...`` metrics), never train them. The returned
    backbone is the final clustering model's; with ``on_features`` it is the frozen pretrained
    backbone (the heads never saw images).
    """
    start = time.perf_counter()
    check_num_clusters(num_clusters)
    stop_after = check_stop_after(clustering.stop_after)
    on_features = bool(clustering.get("on_features", False))
    if on_features and not uses_pretrained_pretext(clustering):
        raise ValueError("clustering.on_features=true needs a pretrained clustering.pretext")
    if stop_after != "simclr":
        check_mined_features(clustering.mining.features)
    runtime.datamodule.setup()
    images = runtime.datamodule.images[NORMAL_TRAIN]
    labels = runtime.datamodule.train_labels()

    if stop_after == "simclr":  # the pretext stage alone
        backbone, stages = pretext_only(runtime, clustering)
        return finish(runtime, ClusteringResult(backbone, None, stages=stages), start)
    backbone, neighbors, features, stages = mine_normal_images(runtime, clustering, labels)
    result = ClusteringResult(backbone, None, stages=stages)
    inputs, head_input = images, backbone
    if on_features:
        inputs, head_input = FeatureVectors(features), FeatureInput(features.shape[1])
    if stop_after in ("scan", "selflabel"):
        model, result.pseudo_labels, scan_stage = train_scan(
            runtime,
            inputs,
            head_input,
            neighbors,
            clustering.scan,
            num_clusters,
            stages[-1],
            labels,
            features,
        )
        result.stages.append(scan_stage)
    if stop_after == "selflabel":
        result.pseudo_labels, selflabel_stage = train_selflabel(
            runtime, inputs, model, clustering.selflabel, num_clusters, scan_stage, labels
        )
        result.stages.append(selflabel_stage)
        if not on_features:
            result.backbone = model.backbone
    if result.pseudo_labels is not None:
        check_not_collapsed(result.pseudo_labels, num_clusters, stop_after, **clustering.collapse)
    if result.pseudo_labels is not None and labels is not None:
        result.metrics |= prefixed(cluster_metrics(result.pseudo_labels, labels), "cluster")
    return finish(runtime, result, start)


def pretext_only(runtime: Runtime, clustering: DictConfig) -> tuple[Backbone, list[CachedStage]]:
    """``clustering.stop_after=simclr``: the pretext stage alone (SimCLR or the features)."""
    if uses_pretrained_pretext(clustering):
        backbone, _, stage = pretrained_features(runtime, clustering.pretext)
        return backbone, [stage]
    images = runtime.datamodule.images[NORMAL_TRAIN]
    simclr, stage = pretrain_simclr(runtime, images, clustering.simclr)
    return simclr.backbone, [stage]


def finish(runtime: Runtime, result: ClusteringResult, start: float) -> ClusteringResult:
    """Collect the stages' metrics, log them and stage 1's wall time."""
    for stage in result.stages:
        result.metrics = stage.metrics | result.metrics
    seconds = time.perf_counter() - start
    stages = " -> ".join(stage.stage for stage in result.stages)
    log.info("stage 1 (%s): %.1f s", stages, seconds)
    runtime.log_metrics(result.metrics)
    return result
