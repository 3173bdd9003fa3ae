"""SimCLR epoch: the framework's stage (Runtime.fit of SimCLRModule) vs a bare PyTorch loop.

The demo's recipe (``+experiment=digits``: small CNN at 12 px, batches of 128, the digits
augmentation) on the 755 normal digits. Both loops start from the same weights and random state,
so they draw the same batches and end with the same weights (checked).
Usage: python -m benchmarks.simclr_epoch [--epochs 3 --repeats 3]
"""

from __future__ import annotations

import argparse
import copy

from hydra.utils import instantiate

from benchmarks.common import (
    StageTiming,
    bare_train,
    check_same_parameters,
    demo_config,
    fresh_directory,
    interleaved,
    runtime_for,
    seeded,
)
from ood_nolabels.data.augment import TwoViews
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.data.images import IndexedDataset
from ood_nolabels.losses import nt_xent
from ood_nolabels.stages.base import augmentation_for
from ood_nolabels.stages.simclr import SimCLRModule


def measure(epochs: int = 3, repeats: int = 3) -> StageTiming:
    cfg = demo_config()
    config = cfg.clustering.simclr
    runtime = runtime_for(cfg, fresh_directory())
    initial = SimCLRModule(
        instantiate(config.backbone),
        optimizer=instantiate(config.optimizer),
        scheduler=instantiate(config.scheduler),
        **config.module,
    )
    views = TwoViews(augmentation_for(config.augment, initial.backbone))
    dataset = IndexedDataset(runtime.datamodule.images[NORMAL_TRAIN], views)
    loader = runtime.datamodule.train_loader(dataset, config.batch_size)

    def framework() -> SimCLRModule:
        module = copy.deepcopy(initial)
        runtime.fit(module, loader, epochs, fresh_directory())
        return module

    def bare() -> SimCLRModule:
        module = copy.deepcopy(initial)

        def loss(batch):
            (view1, view2), _ = batch
            return nt_xent(module(view1), module(view2), module.temperature)

        bare_train(module, loader, epochs, loss)
        return module

    timing = StageTiming(
        "SimCLR",
        "epoch",
        workload=f"{len(dataset)} digits, {config.backbone.image_size} px, batch "
        f"{config.batch_size}, {epochs} epochs per run",
    )
    ours, reference = interleaved(timing, seeded(framework), seeded(bare), repeats, epochs)
    check_same_parameters(ours, reference)
    return timing


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(measure(args.epochs, args.repeats).line())


if __name__ == "__main__":
    main()
