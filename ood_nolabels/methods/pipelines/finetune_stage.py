"""The cached finetune stage (the paper's stage 2): a pretrained backbone finetuned on the
pseudo-labels, its weights saved at every epoch end and averaged."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ood_nolabels.data.images import IndexedDataset
from ood_nolabels.data.splits import NORMAL_TRAIN
from ood_nolabels.engine.artifacts import (
    CachedStage,
    load_artifact,
    save_artifact,
    verify_artifact,
)
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.modules.finetune import FinetuneModule
from ood_nolabels.modules.weight_averaging import EpochSnapshots, EpochWeightAveraging


def finetune(
    runtime: Runtime,
    backbone: Backbone,
    backbone_key: Any,
    pseudo_labels: torch.Tensor,
    config: DictConfig,
    num_classes: int,
    callbacks: Sequence[L.Callback] = (),
) -> tuple[list[Path], CachedStage]:
    """The cached finetune stage with epoch-end weight averaging (the paper's stage 2).

    Leaves the averaged weights in ``backbone`` and returns the per-epoch weight files. The key
    covers the normal data, ``backbone_key`` (the pretrained backbone's config), ``config`` (the
    ``finetune`` node), K and the pseudo-labels themselves. ``callbacks`` (e.g. the OOD
    evaluation) join the fit after the weight averaging.
    """
    labels_digest = hashlib.sha256(pseudo_labels.numpy().tobytes()).hexdigest()
    stage = runtime.stage(
        "finetune", runtime.data_key, backbone_key, config, num_classes, labels_digest
    )

    def train(work_dir: Path) -> None:
        module = FinetuneModule(
            backbone,
            pseudo_labels,
            num_classes,
            optimizer=instantiate(config.optimizer),
            scheduler=instantiate(config.scheduler),
            freeze_bn_stats=config.freeze_bn_stats,
            trainable=config.get("trainable"),
            elastic_weight=config.get("elastic_weight", 0.0),
            distill_weight=config.get("distill_weight", 0.0),
        )
        transform = backbone.transform(train=True, **config.augment)
        dataset = IndexedDataset(runtime.datamodule.images[NORMAL_TRAIN], transform)
        loader = runtime.datamodule.train_loader(dataset, config.batch_size)
        averaging = [EpochWeightAveraging(), EpochSnapshots(work_dir / "epochs")]
        runtime.fit(
            module,
            loader,
            config.epochs,
            work_dir,
            callbacks=[*averaging, *callbacks],
            steps_per_epoch=config.get("steps_per_epoch"),
        )
        module.check_learned()
        save_artifact(backbone.state_dict(), work_dir / "averaged.pt")

    def load(directory: Path) -> list[Path]:
        # Every file checked before the backbone changes: a retrain starts from the pretrained
        # weights.
        snapshots = EpochSnapshots(directory / "epochs")
        paths = [snapshots.path(e) for e in range(runtime.epochs(config.epochs))]
        for path in paths:
            verify_artifact(path)
        backbone.load_state_dict(load_artifact(directory / "averaged.pt"))
        return paths

    return stage.run(train, load), stage
