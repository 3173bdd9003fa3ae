"""The cached pretrained-features stage: stage 1 on a pretrained backbone instead of SimCLR.

The features of the un-augmented normal training images (the backbone's own evaluation
preprocessing) are extracted once and kept as ``features-<hash>/features.pt``; neighbours are
mined in that space and, with ``stage1.on_features``, SCAN and self-labelling train their heads
on these cached vectors without running the backbone again.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ood_nolabels.data.images import IndexedDataset, LabeledImages
from ood_nolabels.data.splits import NORMAL_TRAIN
from ood_nolabels.engine.artifacts import CachedStage, load_rows, save_artifact
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.models.precomputed import identity

# Un-augmented passes over cached feature vectors: large batches, nothing to decode.
FEATURE_BATCH_SIZE = 1024


class FeatureVectors(LabeledImages):
    """Cached ``(N, D)`` features served where images are expected: item ``i`` is row ``i``."""

    labels = None

    def __init__(self, features: torch.Tensor) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def get_image(self, index: int) -> torch.Tensor:
        return self.features[index]


def plain_loader(runtime: Runtime, images: LabeledImages, transform) -> DataLoader:
    """``(input, index)`` batches of the normal training set in dataset order, un-augmented:
    the images through ``transform``, or cached :class:`FeatureVectors` as they are."""
    if isinstance(images, FeatureVectors):
        return DataLoader(IndexedDataset(images, identity), batch_size=FEATURE_BATCH_SIZE)
    return runtime.datamodule.loader(NORMAL_TRAIN, transform)


def pretrained_features(
    runtime: Runtime, backbone: DictConfig
) -> tuple[Backbone, torch.Tensor, CachedStage]:
    """``(pretrained backbone, features (N, D) of the normal training images, stage)``.

    ``backbone`` is a config of the ``backbone`` group; the key is the data and that config, so
    every K, recipe and seed of the later stages reuses one extraction.
    """
    stage = runtime.stage("features", runtime.data_key, backbone)  # seeds a random init too
    model = instantiate(backbone)

    def train(work_dir: Path) -> None:
        loaders = {NORMAL_TRAIN: runtime.datamodule.loader(NORMAL_TRAIN, model.transform())}
        save_artifact(runtime.extract(model, loaders)[NORMAL_TRAIN], work_dir / "features.pt")

    def load(directory: Path) -> torch.Tensor:
        return load_rows(directory / "features.pt", runtime.num_normal_images)

    features = stage.run(train, load)
    return model, features, stage
