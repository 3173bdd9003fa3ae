"""The cached self-labelling stage: the SCAN model trained on its own confident predictions."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EMAWeightAveraging
from omegaconf import DictConfig

from ood_nolabels.data.augment import PairedViews
from ood_nolabels.data.images import IndexedDataset, LabeledImages
from ood_nolabels.engine.artifacts import (
    CachedStage,
    load_artifact,
    load_rows,
    save_artifact,
)
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.pipelines.features_stage import plain_loader
from ood_nolabels.methods.pipelines.recipes import augmentation_for
from ood_nolabels.methods.pipelines.scan_stage import cluster_predictions
from ood_nolabels.modules.scan import ClusterModel
from ood_nolabels.modules.selflabel import SelfLabelModule


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

    ``config`` is the ``stage1.selflabel`` node (``weak_augment: null``: targets from the
    backbone's evaluation preprocessing); ``labels`` (optional) only measure it. On cached
    features (``images`` are
    :class:`~ood_nolabels.methods.pipelines.features_stage.FeatureVectors`) both views are the
    feature vector itself: confidence-thresholded self-training of the head.
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
        # Both files read before the model changes: a retrain starts from the SCAN model.
        predictions = load_rows(directory / "pseudo_labels.pt", len(images))
        model.load_state_dict(load_artifact(directory / "selflabel.pt"))
        return predictions

    return stage.run(train, load), stage
