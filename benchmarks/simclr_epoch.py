"""SimCLR epoch: the framework's stage (Runtime.fit of SimCLRModule) vs a bare PyTorch loop.

The demo's recipe (``+experiment=digits``: small CNN at 12 px, batches of 128, the digits
augmentation) on the 755 normal digits. Both loops start from the same weights and random state,
so they draw the same batches and end with the same weights (checked).
Usage: python -m benchmarks.simclr_epoch [--epochs 3 --repeats 3]
"""

from __future__ import annotations

import copy

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
from ood_nolabels.core.losses import nt_xent
from ood_nolabels.data.augment import TwoViews
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.data.images import IndexedDataset
from ood_nolabels.methods.pipelines.recipes import augmentation_for
from ood_nolabels.modules.simclr import SimCLRModule


def measure(epochs: int = 3, repeats: int = 3) -> StageTiming:
    cfg = demo_config()
    config = cfg.stage1.simclr
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

    def bare() -> SimCLRModule:
        module = copy.deepcopy(initial)

        def loss(batch):
            (view1, view2), _ = batch
            return nt_xent(module(view1), module(view2), module.temperature)

        bare_train(module, loader, epochs, loss)
        return module

    workload = (
        f"{len(dataset)} digits, {config.backbone.image_size} px, batch "
        f"{config.batch_size}, {epochs} epochs per run"
    )
    return compare_training(
        "SimCLR", workload, framework_fit(runtime, initial, loader, epochs), bare, repeats, epochs
    )


def main() -> None:
    stage_main(measure, epochs=3, repeats=3)


if __name__ == "__main__":
    main()
