"""SCAN clustering: K-way heads trained so mined neighbours share a cluster."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.aggregation import MeanMetric

from ood_nolabels.losses import scan_loss
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.stages.base import OptimizerFactory, SchedulerFactory, StageModule


def check_num_clusters(num_clusters: int) -> int:
    if num_clusters < 2:
        raise ValueError(f"K (the number of clusters) must be >= 2, got {num_clusters}")
    return num_clusters


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

    Batches are ``(anchors, neighbours, indices)``. With ``update_backbone=False`` only the heads
    train (the backbone stays in eval mode, BatchNorm statistics frozen).
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
        features = self.backbone(torch.cat([anchors, neighbors]))
        anchor_features, neighbor_features = features.chunk(2)
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
