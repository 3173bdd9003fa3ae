"""What every training stage shares: optimizer/scheduler from config and a finite-loss guard."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ood_nolabels.models.backbones import Backbone

OptimizerFactory = Callable[..., Optimizer]
SchedulerFactory = Callable[..., LRScheduler]


def check_num_clusters(num_clusters: int) -> int:
    """K, the number of clusters / pseudo-classes, or a clear error."""
    if num_clusters < 2:
        raise ValueError(f"K (the number of clusters) must be >= 2, got {num_clusters}")
    return num_clusters


def augmentation_for(config: DictConfig, backbone: Backbone):
    """Instantiate an augmentation partial for the backbone's input size and statistics."""
    return instantiate(config)(image_size=backbone.image_size, mean=backbone.mean, std=backbone.std)


class StageModule(L.LightningModule):
    """Base LightningModule: ``optimizer`` / ``scheduler`` are Hydra partials (``_partial_: true``).

    The scheduler steps once per epoch (cosine annealing over the stage's epochs in the recipes).
    """

    def __init__(
        self, optimizer: OptimizerFactory, scheduler: SchedulerFactory | None = None
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }

    def checked(self, loss: torch.Tensor) -> torch.Tensor:
        """Stop with a clear message instead of training on a NaN/inf loss."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{type(self).__name__}: loss is {loss.item()} at epoch {self.current_epoch}, "
                f"step {self.global_step}. Lower the learning rate (the stage's optimizer.lr) or "
                "check the input data; rerunning resumes from the last epoch checkpoint."
            )
        return loss
