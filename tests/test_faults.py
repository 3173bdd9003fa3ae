"""The fault matrix of stale caches, interrupted runs and bad values: each case either gives the
result an uninterrupted run on an empty cache gives, or stops with a message naming the cause
and the fix. In-process on the synthetic presets (the command-line cases are in
test_reliability.py)."""

import logging
import os
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from ood_nolabels.core.atomic import StorageError, storage_error
from ood_nolabels.engine.runtime import Runtime, training_key
from ood_nolabels.inference.detector import Detector
from ood_nolabels.train import run, store_of

OURS = ("+experiment=ours_synthetic", "logger=none", "callbacks=none")
SCAN = ("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")
DN2 = ("+experiment=dn2_synthetic", "logger=none", "callbacks=none")
PRETEXT = ("method=stage1_only", "stage1.stop_after=pretext", "stage1.simclr.epochs=1")


class Cut(Exception):
    """Stands for a kill: raised inside a stage, after some of its checkpoints were written."""


class CutAtBatch(L.Callback):
    def __init__(self, epoch: int, batch: int, error: type[BaseException] = Cut) -> None:
        self.epoch, self.batch, self.error = epoch, batch, error

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise self.error


def cut_stage(monkeypatch, stage: str, callback: L.Callback) -> None:
    """Add ``callback`` to the trainer of the stage whose directory starts with ``stage``."""
    original = Runtime.make_trainer

    def make_trainer(self, callbacks=(), **kwargs):
        if Path(kwargs.get("default_root_dir", "")).name.startswith(f"{stage}-"):
            callbacks = [*callbacks, callback]
        return original(self, callbacks=callbacks, **kwargs)

    monkeypatch.setattr(Runtime, "make_trainer", make_trainer)


def stage_names(cfg) -> set[str]:
    return {p.name for p in Path(cfg.paths.artifact_dir).iterdir() if p.is_dir()}


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["simclr", "scan", "finetune"])
def test_a_run_cut_inside_a_stage_ends_exactly_as_an_uninterrupted_one(
    compose_cfg, tmp_path, monkeypatch, stage
):
    """Killed in the second epoch of a stage (after its first epoch's checkpoint) and rerun:
    the same metrics.json as a run that was never cut, to the last digit."""
    overrides = (*OURS, "stage1.simclr.epochs=3", "stage1.scan.epochs=3", "finetune.epochs=3")
    whole = run(compose_cfg(*overrides))
    cfg = compose_cfg(*overrides)
    cfg.paths.artifact_dir = str(tmp_path / "cut")
    with monkeypatch.context() as patch:
        cut_stage(patch, stage, CutAtBatch(epoch=1, batch=1))
        with pytest.raises(Cut):
            run(cfg)
    assert list(Path(cfg.paths.artifact_dir).glob(f"{stage}-*.partial/checkpoints/last.ckpt"))
    assert run(cfg) == whole


def image_folder(root: Path, seed: int, classes: int = 2, per_class: int = 12) -> None:
    """root/train/<class>/*.png (gratings of one orientation per class, noise from ``seed``),
    root/test/<class>/ and root/ood/: the imagefolder layout."""
    rng = np.random.default_rng(seed)
    grid = np.arange(16)
    for split, count in (("train", per_class), ("test", 4)):
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            wave = np.sin(grid[:, None] * (label + 1) * 0.6 + grid[None, :] * label * 0.4)
            for i in range(count):
                pixels = 127 + 100 * wave + rng.normal(0, 20, (16, 16))
                image = np.repeat(pixels.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
                Image.fromarray(image).save(folder / f"{i}.png")
                os.utime(folder / f"{i}.png", ns=(0, 10**18))  # the fingerprint sees times
    (root / "ood").mkdir()
    for i in range(4):
        noise = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(noise).save(root / "ood" / f"{i}.png")


def folder_run(compose_cfg, root: Path):
    return compose_cfg(
        *OURS,
        *PRETEXT,
        "dataset=imagefolder",
        f"dataset.root={root}",
        "ood=imagefolder",
        f"ood.ood.root={root}/ood",
        "K=2",
    )


def test_a_stage_is_keyed_by_the_images_not_their_path(compose_cfg, tmp_path):
    """The same images at another path reuse the stage; other images at the same path retrain
    it (once keyed by the folder's path, the second case reused the stale stage)."""
    image_folder(tmp_path / "a", seed=0)
    cfg = folder_run(compose_cfg, tmp_path / "a")
    run(cfg)
    first = stage_names(cfg)
    (simclr,) = (name for name in first if name.startswith("simclr-"))

    shutil.copytree(tmp_path / "a", tmp_path / "b")  # copy2: sizes and times kept
    run(folder_run(compose_cfg, tmp_path / "b"))
    assert stage_names(cfg) == first  # same images elsewhere: reused

    shutil.rmtree(tmp_path / "b")
    image_folder(tmp_path / "b", seed=1)  # other images, same names and count
    run(folder_run(compose_cfg, tmp_path / "b"))
    retrained = {name for name in stage_names(cfg) - first if name.startswith("simclr-")}
    assert len(retrained) == 1 and retrained != {simclr}


@pytest.mark.parametrize(
    ("overrides", "changed"),
    [
        (("trainer.precision=bf16-mixed",), {"precision": "bf16-mixed"}),
        (("trainer=ddp_cpu", "trainer.devices=2"), {"world_size": 2}),
        (("+trainer.num_nodes=2",), {"world_size": 2}),
    ],
)
def test_precision_and_world_size_change_every_training_key(compose_cfg, overrides, changed):
    """An fp32 cache never serves a bf16 run, nor a one-process cache a two-process run."""
    plain, other = compose_cfg(*OURS), compose_cfg(*OURS, *overrides)
    assert training_key(plain.trainer) == {}
    assert changed.items() <= training_key(other.trainer).items()
    assert (
        store_of(plain).stage("simclr", {"lr": 0.1}).directory.name
        != store_of(other).stage("simclr", {"lr": 0.1}).directory.name
    )


def test_a_truncated_epoch_snapshot_is_named_moved_aside_and_retrained(compose_cfg, caplog):
    cfg = compose_cfg(*OURS)
    whole = run(cfg)
    (snapshot,) = Path(cfg.paths.artifact_dir).glob("finetune-*/epochs/epoch_1.pt")
    snapshot.write_bytes(snapshot.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        assert run(cfg) == whole
    warning = "\n".join(caplog.messages)
    assert "epoch_1.pt" in warning and "moved it to" in warning
    assert list(Path(cfg.paths.artifact_dir).glob("finetune-*.corrupt-*/epochs/epoch_1.pt"))


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (PermissionError(13, "Permission denied"), r"permission denied writing .*x\.pt"),
        (OSError(28, "No space left on device"), r"no space left on the device while writing"),
        (
            RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64"),
            r"no space",
        ),
    ],
)
def test_storage_errors_say_what_happened_and_where(tmp_path, error, message):
    found = storage_error(error, tmp_path / "x.pt")
    assert isinstance(found, StorageError)
    assert pytest.raises(StorageError, _raise, found).match(message)
    assert str(tmp_path / "x.pt") in str(found)


def _raise(error: BaseException) -> None:
    raise error


def test_a_non_storage_error_is_left_alone(tmp_path):
    assert storage_error(RuntimeError("shape mismatch"), tmp_path / "x.pt") is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("K=abc",), r"K='abc': K \(the number of clusters\) must be an integer >= 2 or 'auto'"),
        (("finetune.epochs=0",), r"finetune.epochs=0: .*at least 1 epoch.*finetune.epochs >= 1"),
        (("seed=abc",), r"seed='abc': expected int \(the default is seed=0\)"),
        (("data.batch_size=0",), r"data.batch_size=0: use 1 or more"),
        (("dataset.per_class=2",), r"only 8 normal training image\(s\).*at least 10"),
    ],
)
def test_bad_values_stop_before_any_stage_trains(compose_cfg, overrides, message):
    cfg = compose_cfg(*OURS, *overrides)
    with pytest.raises(ValueError, match=message):
        run(cfg)
    assert not Path(cfg.paths.artifact_dir).exists() or not stage_names(cfg)


def test_dn2_refuses_too_few_normal_images_too(compose_cfg):
    """DN2 trains nothing, but a kNN bank of three images is no detector either."""
    with pytest.raises(ValueError, match=r"only 8 normal training image\(s\)"):
        run(compose_cfg(*DN2, "dataset.per_class=2"))


def test_ctrl_c_says_what_was_kept_and_how_to_resume(compose_cfg, monkeypatch, caplog):
    cfg = compose_cfg(*OURS, "stage1.simclr.epochs=3")
    cut_stage(monkeypatch, "simclr", CutAtBatch(epoch=1, batch=0, error=KeyboardInterrupt))
    with caplog.at_level(logging.ERROR), pytest.raises((KeyboardInterrupt, SystemExit)):
        run(cfg)
    (message,) = (m for m in caplog.messages if m.startswith("interrupted:"))
    assert "keeps 0 complete stage(s) and the last epoch checkpoint of simclr-" in message
    assert "Rerun the same command to continue" in message


def test_one_class_of_normal_images_prints_no_clustering_metrics(compose_cfg, tmp_path):
    """A folder of unlabeled images (one subfolder) is no labeling to score a clustering by."""
    image_folder(tmp_path / "data", seed=0)
    for path in (tmp_path / "data" / "train" / "class1").iterdir():  # both kinds in one folder
        path.rename(tmp_path / "data" / "train" / "class0" / f"other_{path.name}")
    (tmp_path / "data" / "train" / "class1").rmdir()
    overrides = (f"dataset.root={tmp_path}/data", "ood=imagefolder", "K=2")
    cfg = compose_cfg(*SCAN, "dataset=imagefolder", f"ood.ood.root={tmp_path}/data/ood", *overrides)
    metrics = run(cfg)
    labeled = [n for n in metrics if n.split("/")[-1] in ("acc", "nmi", "ari")]
    assert labeled == [] and "cluster/selflabel/empty_clusters" in metrics  # label-free: kept
    assert "ood/ood/knn/auroc" in metrics  # scored as usual


class Foreign:
    """Any object that is not tensors and plain containers."""


def test_an_unreadable_detector_file_is_named_and_never_unpickled(tmp_path):
    path = tmp_path / "detector.pt"
    torch.save({"weights": torch.zeros(4)}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"detector.pt.*(truncated|cannot be read)"):
        Detector.load(path)

    torch.save(Foreign(), path)
    with pytest.raises(
        ValueError, match=r"not a detector written by ood-nolabels.*will not be unpickled"
    ):
        Detector.load(path)
