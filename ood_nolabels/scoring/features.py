"""Feature extraction as a Lightning test loop, correct under DDP.

Lightning shards every test loader with a DistributedSampler, which pads the last shard with
repeated samples. Each batch carries its dataset indices, so after ``all_gather`` the features are
put back in dataset order and the padded duplicates dropped: every rank ends with the full,
exact feature matrix of each split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler


def unique_by_index(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows of ``features`` sorted by dataset index, keeping one row per index."""
    order = torch.argsort(indices, stable=True)
    indices, features = indices[order], features[order]
    keep = torch.ones_like(indices, dtype=torch.bool)
    keep[1:] = indices[1:] != indices[:-1]
    return features[keep]


def gather_features(
    chunks: Sequence[tuple[torch.Tensor, torch.Tensor]],
    all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``(features, indices)`` batches of one split -> its features in dataset order.

    With ``all_gather`` (more than one rank) every rank's batches are gathered first; ranks hold
    equally many samples because the DistributedSampler pads, and the padding is dropped here.
    """
    features = torch.cat([f for f, _ in chunks])
    indices = torch.cat([i for _, i in chunks])
    if all_gather is not None:
        features = all_gather(features).flatten(0, 1)
        indices = all_gather(indices).flatten(0, 1)
    return unique_by_index(features, indices).cpu()


def extract_during_fit(
    trainer: L.Trainer, model: nn.Module, loaders: Mapping[str, DataLoader]
) -> dict[str, torch.Tensor]:
    """Features of whole splits in the middle of ``trainer.fit`` (e.g. at an epoch end).

    Runs ``model`` in eval mode under the trainer's precision on its device, shards each split
    over the ranks and gathers it back, then restores every submodule's train/eval mode.
    """
    device = trainer.strategy.root_device
    world = trainer.world_size
    modes = {module: module.training for module in model.modules()}
    model.eval()
    features = {}
    try:
        with torch.inference_mode(), trainer.precision_plugin.forward_context():
            for split, loader in loaders.items():
                if world > 1:
                    sampler = DistributedSampler(
                        loader.dataset, world, trainer.global_rank, shuffle=False
                    )
                    loader = DataLoader(
                        loader.dataset,
                        loader.batch_size,
                        sampler=sampler,
                        num_workers=loader.num_workers,
                        pin_memory=loader.pin_memory,
                    )
                chunks = [
                    (model(images.to(device)).float(), indices.to(device))
                    for images, indices in loader
                ]
                gather = trainer.strategy.all_gather if world > 1 else None
                features[split] = gather_features(chunks, gather)
    finally:
        for module, training in modes.items():
            module.train(training)
    return features


class FeatureExtractor(L.LightningModule):
    """Runs a model over the test loaders (one per split) and gathers its outputs.

    The model is usually a :class:`~ood_nolabels.models.backbones.Backbone` (features) but any
    module works, e.g. a cluster model whose outputs are logits.

    Use with ``trainer.test(extractor, dataloaders=[...])`` where the loaders yield
    ``(images, indices)`` in the order of ``split_names``. Subclasses act on the gathered
    features in :meth:`on_features`, which runs on every rank with identical inputs.
    """

    def __init__(self, backbone: nn.Module, split_names: Sequence[str]) -> None:
        super().__init__()
        self.backbone = backbone
        self.split_names = list(split_names)
        self.features: dict[str, torch.Tensor] = {}
        self._chunks: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def on_test_epoch_start(self) -> None:
        self._chunks = {name: [] for name in self.split_names}

    def test_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ):
        images, indices = batch
        features = self.backbone(images).float()
        self._chunks[self.split_names[dataloader_idx]].append((features, indices))

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
        gather = self.all_gather if self.trainer.world_size > 1 else None
        self.features = {
            name: gather_features(chunks, gather) for name, chunks in self._chunks.items()
        }
        self._chunks = {}
        self._check_complete()
        self.on_features(self.features)

    def on_features(self, features: dict[str, torch.Tensor]) -> None:
        """Hook for subclasses: called once per test run with the gathered features."""
