"""The cached neighbour-mining stage: each normal training image's nearest neighbours for SCAN."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from ood_nolabels.core.neighbors import mine_neighbors, neighbor_purity
from ood_nolabels.data.splits import NORMAL_TRAIN
from ood_nolabels.engine.artifacts import CachedStage, load_rows, save_artifact
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.modules.simclr import SimCLRModule

MINED_FEATURES = ("projection", "backbone")


def check_mined_features(features: str) -> str:
    if features not in MINED_FEATURES:
        raise ValueError(f"mining.features={features!r}; expected one of {MINED_FEATURES}")
    return features


def mining_encoder(simclr: SimCLRModule, features: str) -> nn.Module:
    """The part of the SimCLR model whose outputs are mined (``mining.features``).

    ``projection``: the whole module, whose forward is the L2-normalised projection-head output
    (the official SCAN code mines those); ``backbone``: the backbone's features before the head.
    """
    return simclr if check_mined_features(features) == "projection" else simclr.backbone


def mine(
    runtime: Runtime,
    encoder: nn.Module,
    transform,
    config: DictConfig,
    upstream: CachedStage,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, CachedStage]:
    """``(neighbours (N, k'), features (N, D), stage)`` of the normal training images.

    ``encoder`` with ``transform`` gives the features mined in; ``k' = k + 1`` with
    ``config.include_self`` (the anchor is a candidate, in column 0), else ``k``. ``labels``
    (ground truth, optional) only measure the neighbours' purity, the anchor left out. The key
    holds no K: a K sweep mines once.
    """

    def features() -> torch.Tensor:
        loaders = {NORMAL_TRAIN: runtime.datamodule.loader(NORMAL_TRAIN, transform)}
        return runtime.extract(encoder, loaders)[NORMAL_TRAIN]

    return _mining_stage(runtime, features, config, upstream, labels)


def mine_features(
    runtime: Runtime,
    features: torch.Tensor,
    config: DictConfig,
    upstream: CachedStage,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, CachedStage]:
    """As :func:`mine`, on features already extracted by ``upstream`` (a pretrained backbone's)."""
    if config.features != "backbone":
        raise ValueError(
            f"mining.features={config.features!r}: a pretrained backbone has no projection head; "
            "set stage1.mining.features=backbone"
        )
    return _mining_stage(runtime, lambda: features, config, upstream, labels)


def _mining_stage(
    runtime: Runtime,
    features: Callable[[], torch.Tensor],
    config: DictConfig,
    upstream: CachedStage,
    labels: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, CachedStage]:
    stage = runtime.stage("mining", upstream.name, config)

    def train(work_dir: Path) -> dict[str, float]:
        mined = features()
        neighbors = mine_neighbors(
            mined,
            config.num_neighbors,
            use_faiss=config.use_faiss,
            include_self=config.include_self,
        )
        save_artifact(mined, work_dir / "features.pt")
        save_artifact(neighbors, work_dir / "neighbors.pt")
        if labels is None:
            return {}
        return {"cluster/mining/neighbor_purity": neighbor_purity(neighbors, labels)}

    def load(directory: Path) -> tuple[torch.Tensor, torch.Tensor]:
        count = runtime.num_normal_images
        return load_rows(directory / "neighbors.pt", count), load_rows(
            directory / "features.pt", count
        )

    neighbors, mined = stage.run(train, load)
    return neighbors, mined, stage
