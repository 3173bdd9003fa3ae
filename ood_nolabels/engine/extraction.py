"""Feature extraction correct under DDP: as a Lightning test loop, or in the middle of a fit.

Every split is sharded over the ranks and gathered back in dataset order
(:func:`~ood_nolabels.core.gather.gather_features`): every rank ends with the full, exact feature
matrix of each split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ood_nolabels.core.gather import gather_features


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
