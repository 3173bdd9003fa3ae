"""Feature extraction as a Lightning test loop, correct under DDP.

Lightning shards every test loader with a DistributedSampler, which pads the last shard with
repeated samples. Each batch carries its dataset indices, so after ``all_gather`` the features are
put back in dataset order and the padded duplicates dropped: every rank ends with the full,
exact feature matrix of each split.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import nn


def unique_by_index(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows of ``features`` sorted by dataset index, keeping one row per index."""
    order = torch.argsort(indices, stable=True)
    indices, features = indices[order], features[order]
    keep = torch.ones_like(indices, dtype=torch.bool)
    keep[1:] = indices[1:] != indices[:-1]
    return features[keep]


class FeatureExtractor(L.LightningModule):
    """Runs a model over the test loaders (one per split) and gathers its outputs.

    The model is usually a :class:`~ood_nolabels.models.backbones.Backbone` (features) but any
    module works, e.g. a cluster model whose outputs are logits.

    Use with ``trainer.test(extractor, dataloaders=[...])`` where the loaders yield
    ``(images, indices)`` in the order of ``split_names``. Subclasses act on the gathered
    features in :meth:`on_features`, which runs on every rank with identical inputs.
    """

    def __init__(self, backbone: nn.Module, split_names: Sequence[str], channels_last: bool = True):
        super().__init__()
        self.backbone = backbone
        self.split_names = list(split_names)
        self.channels_last = channels_last
        if channels_last:
            # Here, not in a test hook: parameters re-created under inference mode would become
            # inference tensors that can never be trained again.
            self.backbone.to(memory_format=torch.channels_last)
        self.features: dict[str, torch.Tensor] = {}
        self._chunks: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def on_test_epoch_start(self) -> None:
        self._chunks = {name: [] for name in self.split_names}

    def test_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ):
        images, indices = batch
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.backbone(images).float()
        self._chunks[self.split_names[dataloader_idx]].append((features, indices))

    def _gather(self, chunks: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        features = torch.cat([f for f, _ in chunks])
        indices = torch.cat([i for _, i in chunks])
        if self.trainer.world_size > 1:
            features = self.all_gather(features).flatten(0, 1)
            indices = self.all_gather(indices).flatten(0, 1)
        return unique_by_index(features, indices).cpu()

    def _check_complete(self) -> None:
        """A partial bank would silently change every score: refuse it unless asked for."""
        if self.trainer.fast_dev_run or self.trainer.limit_test_batches != 1.0:
            return
        for name, loader in zip(self.split_names, self.trainer.test_dataloaders, strict=True):
            expected = len(loader.dataset)
            if len(self.features[name]) != expected:
                raise RuntimeError(
                    f"gathered {len(self.features[name])} features for {name}, expected {expected}"
                )

    def on_test_epoch_end(self) -> None:
        missing = [name for name, chunks in self._chunks.items() if not chunks]
        if missing:
            raise RuntimeError(f"no batches were run for {missing}")
        self.features = {name: self._gather(chunks) for name, chunks in self._chunks.items()}
        self._chunks = {}
        self._check_complete()
        self.on_features(self.features)

    def on_features(self, features: dict[str, torch.Tensor]) -> None:
        """Hook for subclasses: called once per test run with the gathered features."""
