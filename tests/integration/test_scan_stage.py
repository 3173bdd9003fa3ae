"""The SCAN stage on the synthetic data: heads-only SCAN leaves the backbone bit-identical; the
best epoch's weights and head are kept, across an interruption too.

Against the official SCAN code (github.com/wvangansbeke/Unsupervised-Classification, snapshot
952ec31): ``scan.py`` keeps the weights of the epoch with the lowest validation loss and
reloads them at the end.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import conv_backbone
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.engine.artifacts import CachedStage, load_artifact
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.pipelines.scan_stage import train_scan
from ood_nolabels.train import build_runtime

FAST = ("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


class HeadsAtStart(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.heads = state(pl_module.heads)


def test_heads_only_scan_on_images_leaves_the_backbone_bit_identical(compose_cfg, monkeypatch):
    """scan_imagenet's SCAN (update_backbone=false, SGD lr 5 momentum 0.9): the heads move, every
    backbone tensor (BatchNorm running statistics included) stays bit-identical."""
    cfg = compose_cfg(*FAST, "stage1.scan.epochs=2")
    with open_dict(cfg):
        cfg.stage1.scan.module.update_backbone = False
        cfg.stage1.scan.optimizer = OmegaConf.create(
            {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 5.0, "momentum": 0.9}
        )
    runtime = build_runtime(cfg)
    runtime.datamodule.setup()
    images = runtime.datamodule.images[NORMAL_TRAIN]
    backbone = conv_backbone(image_size=16, batchnorm=True)
    before = state(backbone)
    neighbors = torch.roll(torch.arange(len(images)), 1)[:, None]
    upstream = CachedStage(Path(cfg.paths.artifact_dir), "mining", "0" * 12, 0)
    record = HeadsAtStart()
    original = Runtime.make_trainer
    monkeypatch.setattr(
        Runtime,
        "make_trainer",
        lambda self, callbacks=(), **kw: original(self, callbacks=[*callbacks, record], **kw),
    )
    model, _, _ = train_scan(runtime, images, backbone, neighbors, cfg.stage1.scan, cfg.K, upstream)
    after = backbone.state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert torch.equal(value, after[name]), name
    assert any("running_mean" in name for name in before)
    assert model.backbone is backbone
    initial = [value for name, value in record.heads.items() if name.endswith("weight")]
    assert initial and not any(torch.equal(model.head.weight, weight) for weight in initial)


class SharpenThenCollapse(L.Callback):
    """Epoch 0: confident heads (a clearly negative selection loss, see below); from epoch 1 on,
    zeroed heads: uniform predictions, a selection loss of exactly 0."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        with torch.no_grad():
            for parameter in pl_module.heads.parameters():
                parameter.mul_(20.0 if trainer.current_epoch == 0 else 0.0)


class Record(L.Callback):
    """Every epoch's weights and selection losses, as validated."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.losses: list[torch.Tensor] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.states.append({k: v.clone() for k, v in pl_module.state_dict().items()})
            self.losses.append(pl_module.val_head_losses.clone())


def test_the_best_epochs_weights_and_head_are_kept(compose_cfg, monkeypatch):
    """scan.py: the checkpoint of the lowest-loss epoch is saved and reloaded, not the last."""
    cfg = compose_cfg(*FAST, "stage1.scan.epochs=3", "stage1.scan.optimizer.lr=0")
    runtime = build_runtime(cfg)
    runtime.datamodule.setup()
    images = runtime.datamodule.images[NORMAL_TRAIN]
    n = len(images)
    # Each image its own only candidate: every head's loss is <= 0, and 0 only when uniform.
    neighbors = torch.arange(n)[:, None]
    record = Record()
    original = Runtime.make_trainer
    monkeypatch.setattr(
        Runtime,
        "make_trainer",
        lambda self, callbacks=(), **kw: original(
            self, callbacks=[*callbacks, SharpenThenCollapse(), record], **kw
        ),
    )
    backbone = instantiate(cfg.stage1.simclr.backbone)  # BatchNorm: its statistics move too
    upstream = CachedStage(Path(cfg.paths.artifact_dir), "mining", "0" * 12, 0)
    model, _, stage = train_scan(
        runtime, images, backbone, neighbors, cfg.stage1.scan, cfg.K, upstream
    )

    assert len(record.losses) == 3
    assert record.losses[0].min() < -0.1  # epoch 0 beats the collapsed epochs 1 and 2
    torch.testing.assert_close(record.losses[1], torch.zeros(2), atol=1e-6, rtol=0)
    saved = load_artifact(stage.directory / "scan.pt")
    assert saved.keys() == record.states[0].keys()
    # Every tensor as validated (written at validation end, the best checkpoint holds the
    # previous epoch's last_head_losses: the validation selection does not use them).
    for key, value in record.states[0].items():
        assert torch.equal(saved[key], value), key
    assert not torch.equal(
        saved["backbone.model.0.1.running_mean"],
        record.states[2]["backbone.model.0.1.running_mean"],
    )  # the last epoch's statistics differ: the best epoch's were restored
    best = int(record.losses[0].argmin())
    assert torch.equal(model.head.weight, record.states[0][f"heads.{best}.weight"])
    assert not (stage.directory / "checkpoints").exists()


class Interrupt(Exception):
    pass


class ScaleHeads(L.Callback):
    """Multiply the heads by ``factors[epoch]`` at the start of that epoch (lr 0 elsewhere)."""

    def __init__(self, factors: dict[int, float], interrupt_at: int | None = None) -> None:
        self.factors = factors
        self.interrupt_at = interrupt_at

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.interrupt_at:
            raise Interrupt
        with torch.no_grad():
            for parameter in pl_module.heads.parameters():
                parameter.mul_(self.factors.get(trainer.current_epoch, 1.0))


def test_a_resumed_stage_keeps_the_best_epoch_from_before_the_interruption(
    compose_cfg, monkeypatch
):
    """Epoch 1 is the best, the run stops before epoch 2, whose loss lies between epochs 0 and 1:
    after resuming, epoch 1's weights stay kept (the best checkpoint's state is up to date in
    the resume checkpoint of the epoch that set it)."""
    cfg = compose_cfg(*FAST, "stage1.scan.epochs=3", "stage1.scan.optimizer.lr=0")
    runtime = build_runtime(cfg)
    runtime.datamodule.setup()
    images = runtime.datamodule.images[NORMAL_TRAIN]
    neighbors = torch.arange(len(images))[:, None]
    upstream = CachedStage(Path(cfg.paths.artifact_dir), "mining", "0" * 12, 0)
    record = Record()
    original = Runtime.make_trainer

    def scan(callback: L.Callback):
        with monkeypatch.context() as patch:
            patch.setattr(
                Runtime,
                "make_trainer",
                lambda self, callbacks=(), **kw: original(
                    self, callbacks=[*callbacks, callback, record], **kw
                ),
            )
            backbone = instantiate(cfg.stage1.simclr.backbone)
            return train_scan(
                runtime, images, backbone, neighbors, cfg.stage1.scan, cfg.K, upstream
            )

    factors = {1: 20.0, 2: 0.25}  # epoch 2 predicts like heads x 5: between epochs 0 and 1
    with pytest.raises(Interrupt):
        scan(ScaleHeads(factors, interrupt_at=2))
    _, _, stage = scan(ScaleHeads(factors))

    assert stage.outcome == "resumed" and len(record.losses) == 3
    best = [float(losses.min()) for losses in record.losses]
    assert best[1] < best[2] < best[0]
    saved = load_artifact(stage.directory / "scan.pt")
    for key, value in record.states[1].items():
        assert torch.equal(saved[key], value), key
