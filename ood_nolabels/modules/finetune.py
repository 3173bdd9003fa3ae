"""Stage 2 of the paper: a pretrained backbone finetuned to classify the pseudo-labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ood_nolabels.models.backbones import Backbone
from ood_nolabels.modules.base import OptimizerFactory, SchedulerFactory, StageModule


class FinetuneModule(StageModule):
    """Backbone + linear head over K pseudo-classes, cross-entropy on the pseudo-labels.

    Batches are ``(images, dataset indices)``; the labels are looked up by index so any
    pseudo-label source (SCAN, k-means, ground truth) plugs in without a new dataset.

    ``freeze_bn_stats`` keeps BatchNorm layers in eval mode: their running statistics stay the
    pretrained ones (the affine weights still train). With small batches and few epochs the
    re-estimated statistics of a tiny or very different dataset can wreck the pretrained
    features (measured on digits: see the README).
    """

    stage_name = "finetune"  # names its progress bar

    def __init__(
        self,
        backbone: Backbone,
        pseudo_labels: torch.Tensor,
        num_classes: int,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        freeze_bn_stats: bool = True,
    ) -> None:
        super().__init__(optimizer, scheduler)
        pseudo_labels = torch.as_tensor(pseudo_labels).long().cpu()
        if int(pseudo_labels.min()) < 0 or int(pseudo_labels.max()) >= num_classes:
            raise ValueError(
                f"pseudo-labels span [{int(pseudo_labels.min())}, {int(pseudo_labels.max())}] "
                f"but K={num_classes}"
            )
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, num_classes)
        # Plain attributes, not buffers: weight averaging must not average labels or counts.
        self.pseudo_labels = pseudo_labels
        self.freeze_bn_stats = freeze_bn_stats
        self.epoch_accuracies: list[float] = []  # training accuracy of every finished epoch
        self._hits = self._seen = 0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["epoch_accuracies"] = self.epoch_accuracies

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.epoch_accuracies = list(checkpoint.get("epoch_accuracies", []))

    def on_train_epoch_end(self) -> None:
        self.epoch_accuracies.append(float(self._hits) / max(int(self._seen), 1))
        self._hits = self._seen = 0

    def check_learned(self) -> None:
        """Stop when no epoch classified the pseudo-labels better than the majority guess."""
        chance = float(torch.bincount(self.pseudo_labels).max()) / len(self.pseudo_labels)
        best = max(self.epoch_accuracies, default=0.0)
        if best <= chance + 0.01:
            raise RuntimeError(
                f"finetuning never beat chance on the pseudo-labels (best epoch training "
                f"accuracy {best:.3f}, majority class {chance:.3f}): the features or the "
                "learning rate are broken. Change finetune.optimizer.lr (too high diverges, too "
                "low does not move) and rerun."
            )

    def on_train_epoch_start(self) -> None:
        if self.freeze_bn_stats:
            for module in self.backbone.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, indices = batch
        targets = self.pseudo_labels[indices.cpu()].to(self.device)
        logits = self.head(self.backbone(images))
        loss = self.checked(F.cross_entropy(logits, targets))
        hits = (logits.argmax(1) == targets).float()
        self._hits, self._seen = self._hits + hits.sum().detach(), self._seen + len(hits)
        accuracy = hits.mean()
        self.log("finetune/train_loss", loss, prog_bar=True, on_epoch=True, batch_size=len(images))
        self.log(
            "finetune/train_acc", accuracy, prog_bar=True, on_epoch=True, batch_size=len(images)
        )
        return loss
