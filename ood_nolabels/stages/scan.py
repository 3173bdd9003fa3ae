"""SCAN clustering: K-way heads trained so mined neighbours share a cluster."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torchmetrics.aggregation import MeanMetric

from ood_nolabels.clustering.kmeans import kmeans_clusters
from ood_nolabels.clustering.metrics import cluster_metrics, prefixed
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.data.images import LabeledImages, NeighborsDataset
from ood_nolabels.losses import scan_loss
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.runtime import Runtime
from ood_nolabels.stages.base import (
    OptimizerFactory,
    SchedulerFactory,
    StageModule,
    augmentation_for,
    check_num_clusters,
)
from ood_nolabels.stages.cache import CachedStage, load_artifact, save_artifact


class ClusterModel(nn.Module):
    """Backbone + one K-way head: images -> cluster logits."""

    def __init__(self, backbone: Backbone, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


class SCANModule(StageModule):
    """Several K-way heads on the SimCLR backbone; the lowest-loss head is kept.

    Batches are ``(anchors, neighbours, indices)``; anchors and neighbours go through the backbone
    in two calls, as the official code (BatchNorm normalises each with its own batch statistics).
    With ``update_backbone=False`` only the heads train (the backbone stays in eval mode,
    BatchNorm statistics frozen).
    """

    def __init__(
        self,
        backbone: Backbone,
        num_clusters: int,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        num_heads: int = 10,
        entropy_weight: float = 5.0,
        update_backbone: bool = True,
    ) -> None:
        super().__init__(optimizer, scheduler)
        check_num_clusters(num_clusters)
        self.backbone = backbone
        self.heads = nn.ModuleList(
            nn.Linear(backbone.feature_dim, num_clusters) for _ in range(num_heads)
        )
        self.entropy_weight = entropy_weight
        self.update_backbone = update_backbone
        self.backbone.requires_grad_(update_backbone)
        self.head_losses = nn.ModuleList(MeanMetric() for _ in range(num_heads))
        # A buffer, so the selection survives checkpoints and DDP-spawn's copy back to the parent.
        self.register_buffer("last_head_losses", torch.full((num_heads,), float("inf")))

    def on_train_epoch_start(self) -> None:
        if not self.update_backbone:
            self.backbone.eval()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        anchors, neighbors, _ = batch
        anchor_features = self.backbone(anchors)
        neighbor_features = self.backbone(neighbors)
        losses = torch.stack(
            [
                torch.stack(
                    scan_loss(head(anchor_features), head(neighbor_features), self.entropy_weight)
                )
                for head in self.heads
            ]
        )  # (heads, [total, consistency, entropy])
        for head_loss, loss in zip(self.head_losses, losses[:, 0].detach(), strict=True):
            head_loss.update(loss)
        total = self.checked(losses[:, 0].sum())
        mean = losses.mean(0)
        n = len(anchors)
        self.log("scan/train_loss", mean[0], prog_bar=True, on_epoch=True, batch_size=n)
        self.log("scan/consistency", mean[1], on_epoch=True, batch_size=n)
        self.log("scan/entropy", mean[2], on_epoch=True, batch_size=n)
        return total

    def on_train_epoch_end(self) -> None:
        self.last_head_losses.copy_(torch.stack([m.compute() for m in self.head_losses]))
        for metric in self.head_losses:
            metric.reset()

    @property
    def best_head(self) -> int:
        """Index of the head with the lowest mean loss over the last epoch (SCAN's selection)."""
        if not torch.isfinite(self.last_head_losses).all():
            raise RuntimeError("no SCAN epoch has finished yet")
        return int(self.last_head_losses.argmin())

    def cluster_model(self) -> ClusterModel:
        return ClusterModel(self.backbone, self.heads[self.best_head])


def cluster_predictions(
    runtime: Runtime,
    model: ClusterModel,
    stage: str,
    num_clusters: int,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cluster ids of the normal training images and ``cluster/<stage>/...`` metrics
    (empty clusters; accuracy, NMI and ARI when ground-truth ``labels`` are given)."""
    loaders = {NORMAL_TRAIN: runtime.datamodule.loader(NORMAL_TRAIN, model.backbone.transform())}
    predictions = runtime.extract(model, loaders)[NORMAL_TRAIN].argmax(dim=1)
    counts = torch.bincount(predictions, minlength=num_clusters)
    metrics = {f"cluster/{stage}/empty_clusters": float((counts == 0).sum())}
    if labels is not None:
        metrics |= prefixed(cluster_metrics(predictions, labels), f"cluster/{stage}")
    return predictions, metrics


def train_scan(
    runtime: Runtime,
    images: LabeledImages,
    backbone: Backbone,
    neighbors: torch.Tensor,
    config: DictConfig,
    num_clusters: int,
    upstream: CachedStage,
    labels: torch.Tensor | None = None,
    mined_features: torch.Tensor | None = None,
) -> tuple[ClusterModel, torch.Tensor, CachedStage]:
    """The cached SCAN stage: ``(cluster model with the selected head, its cluster ids, stage)``.

    ``config`` is the ``clustering.scan`` node; the key holds K and the mining stage. With
    ground-truth ``labels`` and the ``mined_features``, k-means on those features is measured
    too (``cluster/simclr_kmeans/...``), the reference SCAN has to beat.
    """
    check_num_clusters(num_clusters)
    stage = runtime.stage("scan", upstream.name, config, num_clusters)  # seeds the heads' init
    module = SCANModule(
        backbone,
        num_clusters,
        optimizer=instantiate(config.optimizer),
        scheduler=instantiate(config.scheduler),
        **config.module,
    )

    def train(work_dir: Path) -> dict[str, float]:
        dataset = NeighborsDataset(images, neighbors, augmentation_for(config.augment, backbone))
        loader = runtime.datamodule.train_loader(dataset, config.batch_size)
        runtime.fit(module, loader, config.epochs, work_dir)
        save_artifact(module.state_dict(), work_dir / "scan.pt")
        predictions, metrics = cluster_predictions(
            runtime, module.cluster_model(), "scan", num_clusters, labels
        )
        save_artifact(predictions, work_dir / "pseudo_labels.pt")
        if labels is not None and mined_features is not None:
            kmeans = kmeans_clusters(mined_features, num_clusters, stage.seed)
            metrics |= prefixed(cluster_metrics(kmeans, labels), "cluster/simclr_kmeans")
        return metrics

    def load(directory: Path) -> torch.Tensor:
        module.load_state_dict(load_artifact(directory / "scan.pt"))
        return load_artifact(directory / "pseudo_labels.pt")

    predictions = stage.run(train, load)
    return module.cluster_model(), predictions, stage
