"""SimCLR pretext training: the self-supervised features SCAN mines neighbours in."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ood_nolabels.core.losses import nt_xent
from ood_nolabels.data.augment import BatchAugment
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.modules.base import OptimizerFactory, SchedulerFactory, StageModule


class SimCLRModule(StageModule):
    """Backbone + MLP projection head (``feature_dim -> hidden_dim -> projection_dim``), NT-Xent.

    Batches are ``((view1, view2), indices)``. Under DDP the projections of all ranks are gathered
    (with gradients) so every rank sees the negatives of the whole global batch.

    With a ``batch_augment`` (a :class:`BatchAugment`, stateless), batches arrive as
    ``(uint8 images, indices)`` and both views are drawn on the device after the transfer.
    """

    stage_name = "simclr"  # names its progress bar

    def __init__(
        self,
        backbone: Backbone,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        hidden_dim: int = 512,
        projection_dim: int = 128,
        temperature: float = 0.1,
        batch_augment: BatchAugment | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.batch_augment = batch_augment
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Linear(backbone.feature_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, projection_dim),
        )
        self.temperature = temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(images)), dim=1)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.batch_augment is None or not self.training:
            return batch
        images, indices = batch
        return self.batch_augment.views(images), indices

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (view1, view2), _ = batch
        z1, z2 = self(view1), self(view2)
        if self.trainer.world_size > 1:
            z1 = self.all_gather(z1, sync_grads=True).flatten(0, 1)
            z2 = self.all_gather(z2, sync_grads=True).flatten(0, 1)
        loss = self.checked(nt_xent(z1, z2, self.temperature))
        self.log("simclr/train_loss", loss, prog_bar=True, on_epoch=True, batch_size=len(view1))
        return loss
