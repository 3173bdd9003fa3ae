"""The cached SimCLR stage: the self-supervised features stage 1 mines neighbours in."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from ood_nolabels.data.augment import BatchAugment, TwoViews
from ood_nolabels.data.images import IndexedDataset, LabeledImages
from ood_nolabels.engine.artifacts import CachedStage, load_artifact, save_artifact
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.pipelines.recipes import augmentation_for
from ood_nolabels.modules.simclr import SimCLRModule


def pretrain_simclr(
    runtime: Runtime, images: LabeledImages, config: DictConfig
) -> tuple[SimCLRModule, CachedStage]:
    """The cached SimCLR stage on the normal training images: the trained backbone + head.

    ``config`` is the ``stage1.simclr`` node (backbone, augment, module, optimizer, ...). An
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
