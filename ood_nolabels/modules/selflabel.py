"""SCAN self-labelling: confident predictions on weak views supervise strong views."""

from __future__ import annotations

import torch

from ood_nolabels.core.losses import confidence_cross_entropy
from ood_nolabels.modules.base import OptimizerFactory, SchedulerFactory, StageModule
from ood_nolabels.modules.scan import ClusterModel


class SelfLabelModule(StageModule):
    """Fine-tunes the SCAN cluster model on its own confident (> ``threshold``) predictions.

    Batches are ``((weak, strong), indices)``. The weak view gives targets without gradient;
    class balancing stops the largest cluster from absorbing the others, and
    ``min_cluster_fraction`` (official: 0) keeps every cluster's most confident samples in the
    loss (see :func:`~ood_nolabels.core.losses.confidence_cross_entropy`). The whole model trains
    (official, also after a heads-only SCAN) unless ``update_backbone=False``: then only the head
    does, the backbone in eval mode.
    """

    stage_name = "selflabel"  # names its progress bar

    def __init__(
        self,
        model: ClusterModel,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        threshold: float = 0.99,
        class_balance: bool = True,
        update_backbone: bool = True,
        min_cluster_fraction: float = 0.0,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.model = model
        self.threshold = threshold
        self.class_balance = class_balance
        self.update_backbone = update_backbone
        self.min_cluster_fraction = min_cluster_fraction
        model.backbone.requires_grad_(update_backbone)
        model.head.requires_grad_(True)

    def on_train_epoch_start(self) -> None:
        if not self.update_backbone:
            self.model.backbone.eval()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (weak, strong), _ = batch
        with torch.no_grad():
            weak_logits = self.model(weak)
        strong_logits = self.model(strong)
        loss = confidence_cross_entropy(
            weak_logits,
            strong_logits,
            self.threshold,
            self.class_balance,
            self.min_cluster_fraction,
        )
        loss = self.checked(loss)
        confident = (weak_logits.softmax(1).max(1).values > self.threshold).float().mean()
        self.log("selflabel/train_loss", loss, prog_bar=True, on_epoch=True, batch_size=len(weak))
        self.log("selflabel/confident_fraction", confident, on_epoch=True, batch_size=len(weak))
        return loss
