"""SCAN epoch: the framework's stage (Runtime.fit of SCANModule) vs a bare PyTorch loop.

The demo's recipe (``+experiment=digits``: 10 heads on the small CNN, RandAugment views of each
anchor and a random one of its 20 neighbours, batches of 128) on the 755 normal digits, with
neighbours mined on raw pixels (the timing does not depend on which). Same weights, random state
and batches in both loops; they end with the same weights (checked).
Usage: python -m benchmarks.scan_epoch [--epochs 3 --repeats 3]
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
    framework_fit,
    fresh_directory,
    runtime_for,
    stage_main,
)
from ood_nolabels.core.losses import scan_loss
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.data.images import NeighborsDataset
from ood_nolabels.methods.pipelines.recipes import augmentation_for
from ood_nolabels.modules.scan import SCANModule


def pixel_neighbors(images, k: int) -> torch.Tensor:
    pixels = torch.stack(
        [
            torch.as_tensor(list(images[i].getdata()), dtype=torch.float32)
            for i in range(len(images))
        ]
    )
    similarity = F.normalize(pixels.flatten(1), dim=1) @ F.normalize(pixels.flatten(1), dim=1).T
    return similarity.topk(k + 1, dim=1).indices[:, 1:]


def measure(epochs: int = 3, repeats: int = 3) -> StageTiming:
    cfg = demo_config()
    config = cfg.stage1.scan
    runtime = runtime_for(cfg, fresh_directory())
    images = runtime.datamodule.images[NORMAL_TRAIN]
    neighbors = pixel_neighbors(images, cfg.stage1.mining.num_neighbors)
    backbone = instantiate(cfg.stage1.simclr.backbone)
    initial = SCANModule(
        backbone,
        cfg.K,
        optimizer=instantiate(config.optimizer),
        scheduler=instantiate(config.scheduler),
        neighbors=neighbors,
        **config.module,
    )
    dataset = NeighborsDataset(images, neighbors, augmentation_for(config.augment, backbone))
    loader = runtime.datamodule.train_loader(dataset, config.batch_size)

    def bare() -> SCANModule:
        module = copy.deepcopy(initial)

        def loss(batch):
            anchors, neighbours, _ = batch
            anchor_features = module.backbone(anchors)
            neighbour_features = module.backbone(neighbours)
            return sum(
                scan_loss(head(anchor_features), head(neighbour_features), module.entropy_weight)[0]
                for head in module.heads
            )

        bare_train(module, loader, epochs, loss)
        return module

    workload = (
        f"{len(dataset)} digits, {len(initial.heads)} heads, batch {config.batch_size}, "
        f"{epochs} epochs per run"
    )
    return compare_training(
        "SCAN", workload, framework_fit(runtime, initial, loader, epochs), bare, repeats, epochs
    )


def main() -> None:
    stage_main(measure, epochs=3, repeats=3)


if __name__ == "__main__":
    main()
