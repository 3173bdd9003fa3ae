"""SCAN self-labelling: confident predictions on weak views supervise strong views."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EMAWeightAveraging
from omegaconf import DictConfig

from ood_nolabels.data.augment import PairedViews
from ood_nolabels.data.images import IndexedDataset, LabeledImages
from ood_nolabels.losses import confidence_cross_entropy
from ood_nolabels.runtime import Runtime
from ood_nolabels.stages.base import (
    OptimizerFactory,
    SchedulerFactory,
    StageModule,
    augmentation_for,
)
from ood_nolabels.stages.cache import CachedStage, load_artifact, save_artifact
from ood_nolabels.stages.features import plain_loader
from ood_nolabels.stages.scan import ClusterModel, cluster_predictions


class SelfLabelModule(StageModule):
    """Fine-tunes the SCAN cluster model on its own confident (> ``threshold``) predictions.

    Batches are ``((weak, strong), indices)``. The weak view gives targets without gradient;
    class balancing stops the largest cluster from absorbing the others, and
    ``min_cluster_fraction`` (official: 0) keeps every cluster's most confident samples in the
    loss (see :func:`~ood_nolabels.losses.confidence_cross_entropy`). The whole model trains
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


def train_selflabel(
    runtime: Runtime,
    images: LabeledImages,
    model: ClusterModel,
    config: DictConfig,
    num_clusters: int,
    upstream: CachedStage,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, CachedStage]:
    """The cached self-label stage: trains ``model`` in place; returns its cluster ids, stage.

    ``config`` is the ``clustering.selflabel`` node (``weak_augment: null``: targets from the
    backbone's evaluation preprocessing); ``labels`` (optional) only measure it. On cached
    features (``images`` are :class:`~ood_nolabels.stages.features.FeatureVectors`) both views
    are the feature vector itself: confidence-thresholded self-training of the head.
    """
    stage = runtime.stage("selflabel", upstream.name, config)

    def train(work_dir: Path) -> dict[str, float]:
        views = PairedViews(
            augmentation_for(config.weak_augment, model.backbone),
            augmentation_for(config.strong_augment, model.backbone),
        )
        module = SelfLabelModule(
            model,
            optimizer=instantiate(config.optimizer),
            scheduler=instantiate(config.scheduler),
            **config.module,
        )
        ema = [EMAWeightAveraging(decay=config.ema_decay)] if config.ema_decay else []
        loader = runtime.datamodule.train_loader(IndexedDataset(images, views), config.batch_size)
        runtime.fit(module, loader, config.epochs, work_dir, callbacks=ema)
        save_artifact(model.state_dict(), work_dir / "selflabel.pt")
        plain = plain_loader(runtime, images, model.backbone.transform())
        predictions, metrics = cluster_predictions(
            runtime, model, plain, "selflabel", num_clusters, labels
        )
        save_artifact(predictions, work_dir / "pseudo_labels.pt")
        return metrics

    def load(directory: Path) -> torch.Tensor:
        model.load_state_dict(load_artifact(directory / "selflabel.pt"))
        return load_artifact(directory / "pseudo_labels.pt")

    return stage.run(train, load), stage
