"""Stage 1 end to end on the synthetic data: artifacts, reuse, resume, SCAN-features scoring,
the space the neighbours are mined in.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from helpers import hungarian_accuracy
from hydra.utils import instantiate

from ood_nolabels.engine.artifacts import load_artifact
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.pipelines.stage1 import cluster_normal_images
from ood_nolabels.train import build_runtime, run

FAST = ("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")


def stage_dirs(artifacts: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(artifacts.iterdir()):
        if path.suffix == ".lock":
            continue
        found.setdefault(path.name.split("-")[0], []).append(path.name)
    return found


@pytest.mark.parametrize("ema_decay", ["null", "0.9"])
def test_scan_features_run_writes_every_stage_and_scores(compose_cfg, ema_decay):
    cfg = compose_cfg(*FAST, f"stage1.selflabel.ema_decay={ema_decay}")
    metrics = run(cfg)
    artifacts = Path(cfg.paths.artifact_dir)
    assert set(stage_dirs(artifacts)) == {"simclr", "mining", "scan", "selflabel"}
    (selflabel_dir,) = artifacts.glob("selflabel-*[0-9a-f]")
    pseudo_labels = torch.load(selflabel_dir / "pseudo_labels.pt")
    assert (
        pseudo_labels.shape == (64,)
        and 0 <= int(pseudo_labels.min()) <= int(pseudo_labels.max()) < cfg.K
    )
    for name in (
        "cluster/acc",
        "cluster/nmi",
        "cluster/simclr_kmeans/acc",
        "cluster/mining/neighbor_purity",
        "cluster/scan/acc",
        "ood/synthetic_4_5/knn/auroc",
        "ood/synthetic_4_5/mahalanobis/auroc",
    ):
        assert name in metrics, name
    truth = np.arange(4).repeat(16)  # the synthetic normal classes, 16 images each, in order
    expected = hungarian_accuracy(pseudo_labels.numpy(), truth)
    assert metrics["cluster/acc"] == pytest.approx(expected)


@pytest.mark.slow  # a whole method run, several times over
def test_unchanged_upstream_is_reused_and_changed_stage_retrains(compose_cfg, monkeypatch):
    run(compose_cfg(*FAST))
    cfg = compose_cfg(*FAST)
    before = stage_dirs(Path(cfg.paths.artifact_dir))

    def no_training(*args, **kwargs):
        raise AssertionError("a stage was retrained although its config did not change")

    with monkeypatch.context() as patch:  # a scorer sweep reuses every stage
        patch.setattr(Runtime, "fit", no_training)
        metrics = run(compose_cfg(*FAST, "scorer=knn"))
    assert "cluster/selflabel/acc" in metrics  # cached stage metrics are still reported
    assert stage_dirs(Path(cfg.paths.artifact_dir)) == before

    run(compose_cfg(*FAST, "stage1.scan.epochs=1"))
    after = stage_dirs(Path(cfg.paths.artifact_dir))
    assert after["simclr"] == before["simclr"] and after["mining"] == before["mining"]
    assert len(after["scan"]) == 2 and len(after["selflabel"]) == 2


class Interrupt(Exception):
    pass


class InterruptAtEpoch(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise Interrupt


def test_interrupted_stage_resumes_from_its_last_checkpoint(compose_cfg, monkeypatch, caplog):
    cfg = compose_cfg(
        *FAST, "method=stage1_only", "stage1.stop_after=pretext", "stage1.simclr.epochs=3"
    )
    original = Runtime.make_trainer
    with monkeypatch.context() as patch:
        patch.setattr(
            Runtime,
            "make_trainer",
            lambda self, callbacks=(), **kw: original(
                self, callbacks=[*callbacks, InterruptAtEpoch(2)], **kw
            ),
        )
        with pytest.raises(Interrupt):
            run(cfg)
    artifacts = Path(cfg.paths.artifact_dir)
    (work_dir,) = artifacts.glob("simclr-*.partial")  # never published: no complete directory
    assert not (work_dir / "simclr.pt").exists() and not list(artifacts.glob("simclr-*[0-9a-f]"))
    assert torch.load(work_dir / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1

    with caplog.at_level(logging.INFO):
        run(cfg)
    assert any("resuming simclr-" in message for message in caplog.messages)
    assert any("simclr-" in m and ": resumed in" in m for m in caplog.messages)
    simclr_dir = work_dir.with_name(work_dir.name.removesuffix(".partial"))
    assert (simclr_dir / "simclr.pt").exists() and (simclr_dir / "stage.json").exists()
    assert not work_dir.exists()


def test_k_below_two_is_rejected_before_training(compose_cfg):
    with pytest.raises(ValueError, match="K .* must be >= 2"):
        run(compose_cfg(*FAST, "K=1"))


def test_unknown_stop_stage_is_rejected(compose_cfg):
    with pytest.raises(ValueError, match=r"stop_after='simclr'; expected one of \('pretext',"):
        run(compose_cfg(*FAST, "stage1.stop_after=simclr"))


# -- mining as the official simclr.py / models/models.py -----------------------------------------


def mined(compose_cfg, features: str, include_self: bool) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = compose_cfg(
        *FAST,
        "method=stage1_only",
        "stage1.stop_after=mining",
        f"stage1.mining.features={features}",
        f"stage1.mining.include_self={str(include_self).lower()}",
    )
    result = cluster_normal_images(build_runtime(cfg), cfg.stage1, cfg.K)
    assert "cluster/mining/neighbor_purity" in result.metrics
    directory = result.stages[-1].directory
    assert directory.name.startswith("mining-")
    return load_artifact(directory / "features.pt"), load_artifact(directory / "neighbors.pt")


def test_mining_features_choose_the_projection_or_the_backbone(compose_cfg):
    """simclr.py / models/models.py: mined in the normalised projection head's output."""
    cfg = compose_cfg(*FAST).stage1
    projection_dim = cfg.simclr.module.projection_dim
    feature_dim = instantiate(cfg.simclr.backbone).feature_dim
    assert projection_dim != feature_dim

    features, neighbors = mined(compose_cfg, "projection", include_self=True)
    assert features.shape == (64, projection_dim)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(64))
    assert neighbors.shape == (64, cfg.mining.num_neighbors + 1)
    assert torch.equal(neighbors[:, 0], torch.arange(64))

    features, neighbors = mined(compose_cfg, "backbone", include_self=False)
    assert features.shape == (64, feature_dim)
    assert neighbors.shape == (64, cfg.mining.num_neighbors)
    assert not (neighbors == torch.arange(64).unsqueeze(1)).any()


def test_unknown_mining_features_are_rejected(compose_cfg):
    cfg = compose_cfg(*FAST, "stage1.mining.features=logits")
    with pytest.raises(ValueError, match="mining.features='logits'"):
        cluster_normal_images(build_runtime(cfg), cfg.stage1, cfg.K)
