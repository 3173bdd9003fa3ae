"""Stage 1 of the paper: SimCLR -> neighbour mining -> SCAN -> self-label -> pseudo-labels.

Each stage is cached on its own (:mod:`ood_nolabels.stages.cache`): a rerun with the same
upstream config loads instead of training, so sweeps over scorers or downstream settings train
stage 1 once, a K sweep trains SimCLR and mines neighbours once, and an interrupted stage resumes
from its last epoch checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig

from ood_nolabels.clustering.metrics import cluster_metrics, prefixed
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.runtime import Runtime
from ood_nolabels.stages.base import check_num_clusters
from ood_nolabels.stages.cache import CachedStage
from ood_nolabels.stages.mining import check_mined_features, mine, mining_encoder
from ood_nolabels.stages.scan import train_scan
from ood_nolabels.stages.selflabel import train_selflabel
from ood_nolabels.stages.simclr import pretrain_simclr

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


def cluster_normal_images(
    runtime: Runtime, clustering: DictConfig, num_clusters: int
) -> ClusteringResult:
    """Run stage 1 up to ``clustering.stop_after`` on the normal training images.

    ``clustering`` is the ``clustering`` config group; ground-truth labels, when the dataset has
    them, only measure the stages (``cluster/...`` metrics), never train them.
    """
    check_num_clusters(num_clusters)
    stop_after = check_stop_after(clustering.stop_after)
    if stop_after != "simclr":
        check_mined_features(clustering.mining.features)
    runtime.datamodule.setup()
    images = runtime.datamodule.images[NORMAL_TRAIN]
    labels = runtime.datamodule.train_labels()

    simclr, simclr_stage = pretrain_simclr(runtime, images, clustering.simclr)
    backbone = simclr.backbone
    result = ClusteringResult(backbone, None, stages=[simclr_stage])
    if stop_after != "simclr":
        encoder = mining_encoder(simclr, clustering.mining.features)
        neighbors, features, mining_stage = mine(
            runtime, encoder, backbone.transform(), clustering.mining, simclr_stage, labels
        )
        result.stages.append(mining_stage)
    if stop_after in ("scan", "selflabel"):
        model, result.pseudo_labels, scan_stage = train_scan(
            runtime,
            images,
            backbone,
            neighbors,
            clustering.scan,
            num_clusters,
            mining_stage,
            labels,
            features,
        )
        result.stages.append(scan_stage)
    if stop_after == "selflabel":
        result.pseudo_labels, selflabel_stage = train_selflabel(
            runtime, images, model, clustering.selflabel, num_clusters, scan_stage, labels
        )
        result.stages.append(selflabel_stage)
        result.backbone = model.backbone
    for stage in result.stages:
        result.metrics |= stage.metrics
    if result.pseudo_labels is not None:
        check_not_collapsed(result.pseudo_labels, num_clusters, stop_after, **clustering.collapse)
    if result.pseudo_labels is not None and labels is not None:
        result.metrics |= prefixed(cluster_metrics(result.pseudo_labels, labels), "cluster")
    runtime.log_metrics(result.metrics)
    return result
