"""Stage 1 of the paper: a pretext -> neighbour mining -> SCAN -> self-label -> pseudo-labels.

The pretext is SimCLR trained on the normal images, or, with ``stage1.pretext`` (a ``backbone``
config), a pretrained backbone whose features of the normal training images are extracted once
(the cached ``features`` stage). Neighbours are mined in the pretext's features. With
``stage1.on_features`` SCAN and self-labelling then train cluster heads on those cached vectors
(``frozen_features``); otherwise they run on images through the backbone (``scan_imagenet``:
heads only with ``update_backbone: false``).

Each stage is cached on its own (:mod:`ood_nolabels.engine.artifacts`): a rerun with the same
upstream config loads instead of training, so sweeps over scorers or downstream settings train
stage 1 once, a K sweep trains the pretext and mines neighbours once, and an interrupted stage
resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig

from ood_nolabels.core.cluster_metrics import cluster_metrics, prefixed
from ood_nolabels.core.neighbors import neighbor_modularity
from ood_nolabels.data.splits import NORMAL_TRAIN
from ood_nolabels.engine.artifacts import CachedStage
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.pipelines.features_stage import FeatureVectors, pretrained_features
from ood_nolabels.methods.pipelines.mining_stage import (
    check_mined_features,
    mine,
    mine_features,
    mining_encoder,
)
from ood_nolabels.methods.pipelines.recipes import check_stage_modules, check_stage_recipes
from ood_nolabels.methods.pipelines.scan_stage import train_scan
from ood_nolabels.methods.pipelines.selflabel_stage import train_selflabel
from ood_nolabels.methods.pipelines.simclr_stage import pretrain_simclr
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.models.precomputed import PrecomputedFeatures

log = logging.getLogger(__name__)

STAGES = ("pretext", "mining", "scan", "selflabel")


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
            f"stage1.collapse.max_empty_fraction={max_empty_fraction}, "
            f"max_cluster_share={max_cluster_share}). Train the stage longer or with a lower "
            "learning rate, raise its entropy_weight, or choose a smaller K."
        )


def better_clustering(
    scan: torch.Tensor, selflabel: torch.Tensor, neighbors: torch.Tensor, guard: bool | None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Self-labelling's clusters, or SCAN's when ``guard`` and self-labelling lowered the
    modularity of the clustering on the mined k-NN graph (a label-free check: self-training on
    confident samples can let confident clusters swallow others, which labels would show as a
    drop in accuracy). Returns the clusters and both modularities (``cluster/<stage>/...``).
    """
    before, after = neighbor_modularity(neighbors, scan), neighbor_modularity(neighbors, selflabel)
    metrics = {"cluster/scan/modularity": before, "cluster/selflabel/modularity": after}
    if guard and after < before:
        log.warning(
            "self-labelling lowered the modularity of the clusters on the mined neighbour graph "
            "(%.4f -> %.4f): the pseudo-labels are SCAN's (stage1.keep_better_clustering=false "
            "keeps the self-label clusters)",
            before,
            after,
        )
        return scan, metrics | {"cluster/selflabel/kept_scan": 1.0}
    return selflabel, metrics | {"cluster/selflabel/kept_scan": 0.0}


def uses_pretrained_pretext(recipe: DictConfig) -> bool:
    """Whether stage 1 starts from a pretrained backbone (``stage1.pretext``), not SimCLR."""
    return recipe.get("pretext") is not None


def check_recipe(recipe: DictConfig) -> None:
    """Everything about a stage-1 recipe that can be checked before its first stage trains."""
    if recipe is None:
        raise ValueError("no stage-1 recipe: choose one with stage1=<name> (conf/stage1/)")
    if recipe.stop_after not in STAGES:
        raise ValueError(f"stage1.stop_after={recipe.stop_after!r}; expected one of {STAGES}")
    if recipe.get("on_features", False) and not uses_pretrained_pretext(recipe):
        raise ValueError("stage1.on_features=true needs a pretrained stage1.pretext")
    if recipe.stop_after != "pretext":
        check_mined_features(recipe.mining.features)
    check_stage_recipes({f"stage1.{name}": recipe.get(name) for name in ("simclr", "scan")})
    check_stage_recipes({"stage1.selflabel": recipe.get("selflabel")})
    check_stage_modules(recipe)


def pretext(runtime: Runtime, recipe: DictConfig) -> tuple[Backbone, CachedStage, object]:
    """The pretext stage: ``(its backbone, its stage, the SimCLR module or the features)``."""
    if uses_pretrained_pretext(recipe):
        backbone, features, stage = pretrained_features(runtime, recipe.pretext)
        return backbone, stage, features
    images = runtime.datamodule.images[NORMAL_TRAIN]
    simclr, stage = pretrain_simclr(runtime, images, recipe.simclr)
    return simclr.backbone, stage, simclr


def mine_normal_images(
    runtime: Runtime, recipe: DictConfig, labels: torch.Tensor | None
) -> tuple[Backbone, torch.Tensor, torch.Tensor, list[CachedStage]]:
    """The pretext stage and mining: ``(backbone, neighbours, mined features, stages)``.

    Neither depends on K (a K sweep or ``K=auto`` trains them once).
    """
    backbone, pretext_stage, trained = pretext(runtime, recipe)
    if uses_pretrained_pretext(recipe):
        neighbors, features, mining_stage = mine_features(
            runtime, trained, recipe.mining, pretext_stage, labels
        )
    else:
        encoder = mining_encoder(trained, recipe.mining.features)
        neighbors, features, mining_stage = mine(
            runtime, encoder, backbone.transform(), recipe.mining, pretext_stage, labels
        )
    return backbone, neighbors, features, [pretext_stage, mining_stage]


def cluster_normal_images(
    runtime: Runtime, recipe: DictConfig, num_clusters: int
) -> ClusteringResult:
    """Run stage 1 up to ``stage1.stop_after`` on the normal training images.

    ``recipe`` is the ``stage1`` config group (checked by :func:`check_recipe`); ground-truth
    labels, when the dataset has them, only measure the stages (``cluster/...`` metrics), never
    train them. The returned backbone is the final clustering model's; with ``on_features`` it is
    the frozen pretrained backbone (the heads never saw images).
    """
    start = time.perf_counter()
    stop_after = recipe.stop_after
    on_features = bool(recipe.get("on_features", False))
    runtime.datamodule.setup()
    images = runtime.datamodule.images[NORMAL_TRAIN]
    labels = runtime.datamodule.train_labels()

    if stop_after == "pretext":
        backbone, stage, _ = pretext(runtime, recipe)
        return finish(runtime, ClusteringResult(backbone, None, stages=[stage]), start)
    backbone, neighbors, features, stages = mine_normal_images(runtime, recipe, labels)
    result = ClusteringResult(backbone, None, stages=stages)
    inputs, head_input = images, backbone
    if on_features:
        inputs, head_input = FeatureVectors(features), PrecomputedFeatures(features.shape[1])
    if stop_after in ("scan", "selflabel"):
        model, result.pseudo_labels, scan_stage = train_scan(
            runtime,
            inputs,
            head_input,
            neighbors,
            recipe.scan,
            num_clusters,
            stages[-1],
            labels,
            features,
        )
        result.stages.append(scan_stage)
    if stop_after == "selflabel":
        scan_labels = result.pseudo_labels
        result.pseudo_labels, selflabel_stage = train_selflabel(
            runtime, inputs, model, recipe.selflabel, num_clusters, scan_stage, labels
        )
        result.stages.append(selflabel_stage)
        if not on_features:
            result.backbone = model.backbone
        result.pseudo_labels, chosen = better_clustering(
            scan_labels, result.pseudo_labels, neighbors, recipe.get("keep_better_clustering")
        )
        result.metrics |= chosen
    if result.pseudo_labels is not None:
        check_not_collapsed(result.pseudo_labels, num_clusters, stop_after, **recipe.collapse)
    if result.pseudo_labels is not None and labels is not None:
        result.metrics |= prefixed(cluster_metrics(result.pseudo_labels, labels), "cluster")
    return finish(runtime, result, start)


def finish(runtime: Runtime, result: ClusteringResult, start: float) -> ClusteringResult:
    """Collect the stages' metrics, log them and stage 1's wall time."""
    for stage in result.stages:
        result.metrics = stage.metrics | result.metrics
    seconds = time.perf_counter() - start
    stages = " -> ".join(stage.stage for stage in result.stages)
    log.info("stage 1 (%s): %.1f s", stages, seconds)
    runtime.log_metrics(result.metrics)
    return result
