"""Finetune epoch: the framework's stage (FinetuneModule with epoch-end weight averaging and
snapshots, Runtime.fit) vs a bare PyTorch loop doing the same (average and save at each epoch end).

The demo's recipe (``+experiment=digits``: EfficientNet-Lite0 at 64 px, batches of 32, frozen
BatchNorm statistics, K=6) on the 755 normal digits with fixed random pseudo-labels. The per-epoch
OOD evaluation is measured separately (benchmarks/evaluation.py). Both loops end with the same
weights (checked).
Usage: python -m benchmarks.finetune_epoch [--epochs 2 --repeats 2]
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from benchmarks.common import (
    StageTiming,
    bare_train,
    compare_training,
    demo_config,
    fresh_directory,
    runtime_for,
    stage_main,
)
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.data.images import IndexedDataset
from ood_nolabels.modules.finetune import FinetuneModule
from ood_nolabels.modules.weight_averaging import EpochSnapshots, EpochWeightAveraging


def measure(epochs: int = 2, repeats: int = 2) -> StageTiming:
    cfg = demo_config()
    config = cfg.finetune
    runtime = runtime_for(cfg, fresh_directory())
    images = runtime.datamodule.images[NORMAL_TRAIN]
    labels = torch.randint(cfg.K, (len(images),), generator=torch.Generator().manual_seed(0))
    backbone = instantiate(cfg.backbone)
    initial = FinetuneModule(
        backbone,
        labels,
        cfg.K,
        optimizer=instantiate(config.optimizer),
        scheduler=instantiate(config.scheduler),
        freeze_bn_stats=config.freeze_bn_stats,
    )
    dataset = IndexedDataset(images, backbone.transform(train=True, **config.augment))
    loader = runtime.datamodule.train_loader(dataset, config.batch_size)

    def framework() -> torch.nn.Module:
        module = copy.deepcopy(initial)
        work_dir = fresh_directory()
        callbacks = [EpochWeightAveraging(), EpochSnapshots(work_dir / "epochs")]
        runtime.fit(module, loader, epochs, work_dir, callbacks=callbacks)
        return module

    def bare() -> torch.nn.Module:
        module = copy.deepcopy(initial)
        average = copy.deepcopy(module)
        work_dir = fresh_directory()

        def loss(batch):
            images, indices = batch
            return F.cross_entropy(module.head(module.backbone(images)), labels[indices])

        def on_epoch_end(epoch: int) -> None:
            torch.save(module.backbone.state_dict(), work_dir / f"epoch_{epoch}.pt")
            with torch.no_grad():  # the equal running mean of the end-of-epoch weights
                for mean, current in zip(
                    average.state_dict().values(), module.state_dict().values(), strict=True
                ):
                    if mean.is_floating_point():
                        mean.copy_(current if epoch == 0 else mean + (current - mean) / (epoch + 1))

        bare_train(module, loader, epochs, loss, on_epoch_end)
        return average

    workload = (
        f"{len(dataset)} digits, EfficientNet-Lite0 at {backbone.image_size} px, batch "
        f"{config.batch_size}, {epochs} epochs per run"
    )
    return compare_training("finetune", workload, framework, bare, repeats, epochs)


def main() -> None:
    stage_main(measure, epochs=2, repeats=2)


if __name__ == "__main__":
    main()
