"""SCAN self-labelling: confident predictions on weak views supervise strong views."""

from __future__ import annotations

import torch

from ood_nolabels.losses import confidence_cross_entropy
from ood_nolabels.stages.base import OptimizerFactory, SchedulerFactory, StageModule
from ood_nolabels.stages.scan import ClusterModel


class SelfLabelModule(StageModule):
    """Fine-tunes the SCAN cluster model on its own confident (> ``threshold``) predictions.

    Batches are ``((weak, strong), indices)``. The weak view gives targets without gradient;
    class balancing stops the largest cluster from absorbing the others.
    """

    def __init__(
        self,
        model: ClusterModel,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        threshold: float = 0.99,
        class_balance: bool = True,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.model = model
        self.threshold = threshold
        self.class_balance = class_balance

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (weak, strong), _ = batch
        with torch.no_grad():
            weak_logits = self.model(weak)
        strong_logits = self.model(strong)
        loss = confidence_cross_entropy(
            weak_logits, strong_logits, self.threshold, self.class_balance
        )
        loss = self.checked(loss)
        confident = (weak_logits.softmax(1).max(1).values > self.threshold).float().mean()
        self.log("selflabel/train_loss", loss, prog_bar=True, on_epoch=True, batch_size=len(weak))
        self.log("selflabel/confident_fraction", confident, on_epoch=True, batch_size=len(weak))
        return loss
