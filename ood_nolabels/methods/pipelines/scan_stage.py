"""The cached SCAN stage: K-way cluster heads trained so that mined neighbours share a cluster."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ood_nolabels.core.cluster_metrics import cluster_metrics, prefixed
from ood_nolabels.core.kmeans import kmeans_clusters
from ood_nolabels.data.images import LabeledImages, NeighborsDataset
from ood_nolabels.data.splits import NORMAL_TRAIN
from ood_nolabels.engine.artifacts import (
    CachedStage,
    load_artifact,
    load_rows,
    save_artifact,
)
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.pipelines.features_stage import plain_loader
from ood_nolabels.methods.pipelines.recipes import augmentation_for
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.models.precomputed import PrecomputedFeatures
from ood_nolabels.modules.scan import ClusterModel, SCANModule


def cluster_predictions(
    runtime: Runtime,
    model: ClusterModel,
    loader: DataLoader,
    stage: str,
    num_clusters: int,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cluster ids of the normal training set (``loader``: un-augmented, in dataset order) and
    ``cluster/<stage>/...`` metrics (empty clusters; accuracy, NMI and ARI when ground-truth
    ``labels`` are given)."""
    predictions = runtime.extract(model, {NORMAL_TRAIN: loader})[NORMAL_TRAIN].argmax(dim=1)
    counts = torch.bincount(predictions, minlength=num_clusters)
    metrics = {f"cluster/{stage}/empty_clusters": float((counts == 0).sum())}
    if labels is not None:
        metrics |= prefixed(cluster_metrics(predictions, labels), f"cluster/{stage}")
    return predictions, metrics


def train_scan(
    runtime: Runtime,
    images: LabeledImages,
    backbone: Backbone | PrecomputedFeatures,
    neighbors: torch.Tensor,
    config: DictConfig,
    num_clusters: int,
    upstream: CachedStage,
    labels: torch.Tensor | None = None,
    mined_features: torch.Tensor | None = None,
) -> tuple[ClusterModel, torch.Tensor, CachedStage]:
    """The cached SCAN stage: ``(cluster model with the selected head, its cluster ids, stage)``.

    ``images`` are the normal training images, or their cached features
    (:class:`~ood_nolabels.methods.pipelines.features_stage.FeatureVectors`, with a
    :class:`~ood_nolabels.models.precomputed.PrecomputedFeatures` encoder: heads on frozen
    features, no augmentation). ``config`` is the ``stage1.scan`` node; the key holds K and the
    mining stage.
    ``neighbors`` is the mining stage's candidate matrix: the training set draws each anchor's
    neighbour from its row and the ``validation`` selection scores the heads on all of it. With
    ``selection: validation`` the weights and head of the epoch with the lowest
    ``scan/val_loss`` are kept (official ``scan.py``), else those of the last epoch. With
    ground-truth ``labels`` and the ``mined_features``, k-means on those features is measured
    too (``cluster/simclr_kmeans/...``), the reference SCAN has to beat.
    """
    stage = runtime.stage("scan", upstream.name, config, num_clusters)  # seeds the heads' init
    module = SCANModule(
        backbone,
        num_clusters,
        optimizer=instantiate(config.optimizer),
        scheduler=instantiate(config.scheduler),
        neighbors=neighbors,
        **config.module,
    )

    def train(work_dir: Path) -> dict[str, float]:
        dataset = NeighborsDataset(images, neighbors, augmentation_for(config.augment, backbone))
        loader = runtime.datamodule.train_loader(dataset, config.batch_size)
        plain = plain_loader(runtime, images, backbone.transform())
        callbacks = []
        best = work_dir / "checkpoints" / "best.ckpt"
        if module.selection == "validation":
            module.validation_loader = plain
            checkpoint = ModelCheckpoint(
                dirpath=best.parent,
                filename=best.stem,
                monitor="scan/val_loss",
                mode="min",
                save_top_k=1,
                enable_version_counter=False,
                # At validation end, before the epoch's last.ckpt stores this callback's state
                # (so a resumed run compares with the true best; last_head_losses in it are the
                # previous epoch's).
                save_on_train_epoch_end=False,
            )
            callbacks.append(checkpoint)
        runtime.fit(module, loader, config.epochs, work_dir, callbacks)
        if callbacks:  # the checkpoints are deleted when the stage is published: read it now
            module.load_state_dict(load_artifact(best)["state_dict"])
        save_artifact(module.state_dict(), work_dir / "scan.pt")
        predictions, metrics = cluster_predictions(
            runtime, module.cluster_model(), plain, "scan", num_clusters, labels
        )
        save_artifact(predictions, work_dir / "pseudo_labels.pt")
        if labels is not None and mined_features is not None:
            kmeans = kmeans_clusters(mined_features, num_clusters, stage.seed)
            metrics |= prefixed(cluster_metrics(kmeans, labels), "cluster/simclr_kmeans")
        return metrics

    def load(directory: Path) -> torch.Tensor:
        # Both files read before the module changes: a retrain starts from the fresh heads.
        predictions = load_rows(directory / "pseudo_labels.pt", len(images))
        module.load_state_dict(load_artifact(directory / "scan.pt"))
        return predictions

    predictions = stage.run(train, load)
    return module.cluster_model(), predictions, stage
