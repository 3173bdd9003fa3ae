"""SimCLR pretext training: the self-supervised features SCAN mines neighbours in."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from ood_nolabels.data.augment import BatchAugment, TwoViews
from ood_nolabels.data.images import IndexedDataset, LabeledImages
from ood_nolabels.losses import nt_xent
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.runtime import Runtime
from ood_nolabels.stages.base import (
    OptimizerFactory,
    SchedulerFactory,
    StageModule,
    augmentation_for,
)
from ood_nolabels.stages.cache import CachedStage, load_artifact, save_artifact


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


def pretrain_simclr(
    runtime: Runtime, images: LabeledImages, config: DictConfig
) -> tuple[SimCLRModule, CachedStage]:
    """The cached SimCLR stage on the normal training images: the trained backbone + head.

    ``config`` is the ``clustering.simclr`` node (backbone, augment, module, optimizer, ...). An
    ``augment`` that builds a :class:`BatchAugment` (``batch_simclr_augment``) draws the views
    on the trainer's device; the loader then only decodes and resizes.
    """
    stage = runtime.stage("simclr", runtime.data_key, config)  # seeds what is built next
    backbone = instantiate(config.backbone)
    augmentation = augmentation_for(config.augment, backbone)
    on_device = isinstance(augmentation, BatchAugment)
    module = SimCLRModule(
        backbone,
        optimizer=instantiate(config.optimizer),
        scheduler=instantiate(config.scheduler),
        batch_augment=augmentation if on_device else None,
        **config.module,
    )

    def train(work_dir: Path) -> None:
        views = augmentation.loader_transform() if on_device else TwoViews(augmentation)
        dataset = IndexedDataset(images, views)
        loader = runtime.datamodule.train_loader(dataset, config.batch_size)
        runtime.fit(module, loader, config.epochs, work_dir)
        save_artifact(module.state_dict(), work_dir / "simclr.pt")

    stage.run(train, lambda d: module.load_state_dict(load_artifact(d / "simclr.pt")))
    return module, stage
