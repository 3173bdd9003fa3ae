"""SimCLR pretext training: the self-supervised features SCAN mines neighbours in."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ood_nolabels.losses import nt_xent
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.stages.base import OptimizerFactory, SchedulerFactory, StageModule


class SimCLRModule(StageModule):
    """Backbone + MLP projection head (``feature_dim -> hidden_dim -> projection_dim``), NT-Xent.

    Batches are ``((view1, view2), indices)``. Under DDP the projections of all ranks are gathered
    (with gradients) so every rank sees the negatives of the whole global batch.
    """

    def __init__(
        self,
        backbone: Backbone,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        hidden_dim: int = 512,
        projection_dim: int = 128,
        temperature: float = 0.1,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Linear(backbone.feature_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, projection_dim),
        )
        self.temperature = temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(images)), dim=1)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (view1, view2), _ = batch
        z1, z2 = self(view1), self(view2)
        if self.trainer.world_size > 1:
            z1 = self.all_gather(z1, sync_grads=True).flatten(0, 1)
            z2 = self.all_gather(z2, sync_grads=True).flatten(0, 1)
        loss = self.checked(nt_xent(z1, z2, self.temperature))
        self.log("simclr/train_loss", loss, prog_bar=True, on_epoch=True, batch_size=len(view1))
        return loss
