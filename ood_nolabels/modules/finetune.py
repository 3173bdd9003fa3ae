"""Stage 2 of the paper: a pretrained backbone finetuned to classify the pseudo-labels."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ood_nolabels.models.backbones import Backbone
from ood_nolabels.modules.base import OptimizerFactory, SchedulerFactory, StageModule


def train_only(backbone: Backbone, prefixes: Sequence[str]) -> None:
    """Freeze every backbone parameter whose name starts with none of ``prefixes``."""
    names = [name for name, _ in backbone.named_parameters()]
    unmatched = [p for p in prefixes if not any(name.startswith(p) for name in names)]
    if unmatched:
        raise ValueError(
            f"finetune.trainable: {unmatched} match no backbone parameter; names look like "
            f"{names[:3]} ... {names[-2:]}"
        )
    for name, parameter in backbone.named_parameters():
        parameter.requires_grad_(any(name.startswith(prefix) for prefix in prefixes))


class FinetuneModule(StageModule):
    """Backbone + linear head over K pseudo-classes, cross-entropy on the pseudo-labels.

    Batches are ``(images, dataset indices)``; the labels are looked up by index so any
    pseudo-label source (SCAN, k-means, ground truth) plugs in without a new dataset.

    ``freeze_bn_stats`` keeps BatchNorm layers in eval mode: their running statistics stay the
    pretrained ones (the affine weights still train). With small batches and few epochs the
    re-estimated statistics of a tiny or very different dataset can wreck the pretrained
    features (measured on digits: see the docs).

    Three ways to keep the finetuned features close to the pretrained ones, all off by default
    (the paper's finetuning):

    * ``trainable``: only the backbone parameters whose names start with one of these prefixes
      train (e.g. the last blocks); the others keep their pretrained values.
    * ``elastic_weight``: L2-SP (Li et al., 2018), ``weight / 2 * sum (theta - theta_0)**2`` over
      the trained backbone parameters: an elastic pull towards the pretrained weights, EWC with a
      uniform Fisher (PANDA's EWC needs the pretraining data for its Fisher; this needs none).
    * ``distill_weight``: ``weight * mean (1 - cos(f(x), f_0(x)))``, the cosine distance of each
      image's features to the frozen pretrained backbone's (feature distillation, as in
      Learning without Forgetting / DELTA): the geometry kNN scores with is what it keeps.
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
        trainable: Sequence[str] | None = None,
        elastic_weight: float = 0.0,
        distill_weight: float = 0.0,
    ) -> None:
        super().__init__(optimizer, scheduler)
        if elastic_weight < 0 or distill_weight < 0:
            raise ValueError(
                f"finetune.elastic_weight={elastic_weight} and distill_weight={distill_weight} "
                "must be >= 0"
            )
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
        if trainable is not None:
            train_only(backbone, trainable)
        self.elastic_weight = elastic_weight
        self.distill_weight = distill_weight
        # Plain attributes (not parameters nor buffers): never trained, averaged or saved.
        self.anchor = (
            {n: p.detach().clone() for n, p in backbone.named_parameters() if p.requires_grad}
            if elastic_weight
            else None
        )
        teacher = copy.deepcopy(backbone).requires_grad_(False) if distill_weight else None
        self.__dict__["teacher"] = teacher  # not a submodule: never trained, averaged or saved

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
        if self.teacher is not None:
            self.teacher.to(self.device).eval()

    def elastic_penalty(self) -> torch.Tensor:
        """``sum (theta - theta_0)**2 / 2`` over the trained backbone parameters."""
        squares = [
            (parameter - self.anchor[name].to(parameter.device)).square().sum()
            for name, parameter in self.backbone.named_parameters()
            if name in self.anchor
        ]
        return torch.stack(squares).sum() / 2

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, indices = batch
        targets = self.pseudo_labels[indices.cpu()].to(self.device)
        features = self.backbone(images)
        logits = self.head(features)
        loss = F.cross_entropy(logits, targets)
        if self.elastic_weight:
            elastic = self.elastic_penalty()
            loss = loss + self.elastic_weight * elastic
            self.log("finetune/elastic", elastic, on_epoch=True, batch_size=len(images))
        if self.distill_weight:
            with torch.no_grad():
                reference = self.teacher(images)
            drift = (1 - F.cosine_similarity(features, reference, dim=1)).mean()
            loss = loss + self.distill_weight * drift
            self.log("finetune/feature_drift", drift, on_epoch=True, batch_size=len(images))
        loss = self.checked(loss)
        hits = (logits.argmax(1) == targets).float()
        self._hits, self._seen = self._hits + hits.sum().detach(), self._seen + len(hits)
        accuracy = hits.mean()
        self.log("finetune/train_loss", loss, prog_bar=True, on_epoch=True, batch_size=len(images))
        self.log(
            "finetune/train_acc", accuracy, prog_bar=True, on_epoch=True, batch_size=len(images)
        )
        return loss
