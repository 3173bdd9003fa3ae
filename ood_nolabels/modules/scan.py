"""SCAN clustering: K-way heads trained so mined neighbours share a cluster."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.aggregation import MeanMetric

from ood_nolabels.core.gather import gather_features
from ood_nolabels.core.losses import scan_loss
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.modules.base import OptimizerFactory, SchedulerFactory, StageModule


class ClusterModel(nn.Module):
    """Backbone + one K-way head: images -> cluster logits."""

    def __init__(self, backbone: Backbone, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


SELECTIONS = ("validation", "train_loss")
# The official selection weighs the entropy 1, whatever the training loss's weight.
SELECTION_ENTROPY_WEIGHT = 1.0


class SCANModule(StageModule):
    """Several K-way heads on the SimCLR backbone; the lowest-loss head is kept.

    Batches are ``(anchors, neighbours, indices)``; anchors and neighbours go through the backbone
    in two calls, as the official code (BatchNorm normalises each with its own batch statistics).
    With ``update_backbone=False`` only the heads train (the backbone stays in eval mode,
    BatchNorm statistics frozen).

    ``selection`` picks the head:

    * ``validation`` (official ``scan.py`` / ``scan_evaluate``): after every epoch a validation
      loop over the un-augmented training images, batches ``(images, indices)`` in eval mode,
      scores each head with the label-free SCAN loss over all ``(anchor, candidate)`` pairs of
      ``neighbors`` (the candidate matrix the training set samples from) and entropy weight 1;
      the lowest is logged as ``scan/val_loss`` (the cached SCAN stage keeps that epoch's
      weights);
    * ``train_loss``: the head with the lowest mean training loss of the last epoch.
    """

    stage_name = "scan"  # names its progress bar

    def __init__(
        self,
        backbone: Backbone,
        num_clusters: int,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        num_heads: int = 10,
        entropy_weight: float = 5.0,
        update_backbone: bool = True,
        selection: str = "train_loss",
        neighbors: torch.Tensor | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        if selection not in SELECTIONS:
            raise ValueError(f"scan.module.selection={selection!r}; expected one of {SELECTIONS}")
        if selection == "validation" and neighbors is None:
            raise ValueError("selection='validation' needs the mined neighbours")
        self.backbone = backbone
        self.heads = nn.ModuleList(
            nn.Linear(backbone.feature_dim, num_clusters) for _ in range(num_heads)
        )
        self.entropy_weight = entropy_weight
        self.update_backbone = update_backbone
        self.selection = selection
        self.backbone.requires_grad_(update_backbone)
        self.head_losses = nn.ModuleList(MeanMetric() for _ in range(num_heads))
        # Buffers, so the selection survives checkpoints and DDP-spawn's copy back to the parent.
        self.register_buffer("last_head_losses", torch.full((num_heads,), float("inf")))
        self.register_buffer("val_head_losses", torch.full((num_heads,), float("inf")))
        # The mining stage's artifact: no buffer (not saved with the weights, nor broadcast by DDP).
        self.neighbors = None if neighbors is None else torch.as_tensor(neighbors).long().cpu()
        self.validation_loader: DataLoader | None = None  # the un-augmented training images
        self._val_chunks: list[tuple[torch.Tensor, torch.Tensor]] = []

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

    # -- validation selection -------------------------------------------------------------------
    def val_dataloader(self) -> DataLoader | list:
        if self.selection != "validation":
            return []  # no validation loop
        if self.validation_loader is None:
            raise RuntimeError("selection='validation': set the module's validation_loader")
        return self.validation_loader

    def on_validation_epoch_start(self) -> None:
        self._val_chunks = []

    def validation_step(self, batch, batch_idx: int) -> None:
        images, indices = batch
        features = self.backbone(images)
        logits = torch.stack([head(features) for head in self.heads], dim=1)  # (B, heads, K)
        self._val_chunks.append((logits.float(), indices))

    def on_validation_epoch_end(self) -> None:
        chunks, self._val_chunks = self._val_chunks, []
        if self.trainer.sanity_checking or not chunks:
            return  # a few batches: no selection
        gather = self.all_gather if self.trainer.world_size > 1 else None
        logits = gather_features(chunks, gather).to(self.device)  # (N, heads, K), dataset order
        if len(logits) != len(self.neighbors):
            raise RuntimeError(
                f"SCAN validation saw {len(logits)} images, the neighbours cover "
                f"{len(self.neighbors)}: the selection needs every training image"
            )
        losses = head_selection_losses(logits, self.neighbors)
        self.val_head_losses.copy_(losses[:, 0])
        best = int(losses[:, 0].argmin())
        self.log("scan/val_loss", losses[best, 0], prog_bar=True, sync_dist=True)
        self.log("scan/val_consistency", losses[best, 1], sync_dist=True)
        self.log("scan/val_entropy", losses[best, 2], sync_dist=True)

    @property
    def best_head(self) -> int:
        """Index of the selected head: the lowest label-free validation loss (``validation``)
        or the lowest mean loss over the last training epoch (``train_loss``)."""
        losses = self.val_head_losses if self.selection == "validation" else self.last_head_losses
        if not torch.isfinite(losses).all():
            raise RuntimeError("no SCAN epoch has finished yet")
        return int(losses.argmin())

    def cluster_model(self) -> ClusterModel:
        return ClusterModel(self.backbone, self.heads[self.best_head])


def head_selection_losses(logits: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """``(heads, [total, consistency, entropy])`` of the SCAN loss with entropy weight 1.

    ``logits`` ``(N, heads, K)`` of all N images; consistency over every (anchor, candidate)
    pair of ``neighbors`` ``(N, k')``, entropy of the mean prediction over all N (each anchor
    repeated k' times changes no mean), as the official ``scan_evaluate``.
    """
    rows = torch.arange(len(neighbors), device=logits.device).repeat_interleave(neighbors.shape[1])
    cols = neighbors.to(logits.device).flatten()
    return torch.stack(
        [
            torch.stack(scan_loss(logits[rows, head], logits[cols, head], SELECTION_ENTROPY_WEIGHT))
            for head in range(logits.shape[1])
        ]
    )
