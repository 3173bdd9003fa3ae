"""The fault matrix of stale caches, interrupted runs and bad values: each case either gives the
result an uninterrupted run on an empty cache gives, or stops with a message naming the cause
and the fix. In-process on the synthetic presets (the command-line cases are in
tests/e2e/test_reliability_cli.py).
"""

import json
import logging
import os
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from helpers import trained_nothing
from PIL import Image

from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.scorers.mahalanobis import MahalanobisScorer
from ood_nolabels.train import run

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


@pytest.mark.slow  # a whole method run, several times over
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
    ("overrides", "message"),
    [
        (("K=abc",), r"K='abc': K \(the number of clusters\) must be an integer >= 2 or 'auto'"),
        (("finetune.epochs=0",), r"finetune.epochs=0: .*at least 1 epoch.*finetune.epochs >= 1"),
        (("+finetune.steps_per_epoch=0",), r"steps_per_epoch=0: .*1 batch.*steps_per_epoch >= 1"),
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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+stage1.selflabel.module.min_cluster_fractoin=0.5",
            r"stage1.selflabel.module: unknown key\(s\) \['min_cluster_fractoin'\]; "
            r"SelfLabelModule takes \[.*'min_cluster_fraction'",
        ),
        (
            "+stage1.selflabel.module.min_cluster_fraction=1.5",
            r"min_cluster_fraction must be in \[0, 1\], got 1.5",
        ),
        (
            "+stage1.scan.module.entropy_wieght=2",
            r"stage1.scan.module: unknown key\(s\) \['entropy_wieght'\]; SCANModule",
        ),
    ],
)
def test_a_bad_stage_module_key_stops_before_training(compose_cfg, tmp_path, override, message):
    """A stage's module keys reach it only when it starts: checked before the first stage."""
    with pytest.raises(ValueError, match=message):
        run(compose_cfg(*SCAN, override))
    assert trained_nothing(tmp_path)


def test_a_failing_scorer_is_reported_and_the_others_are_written(compose_cfg, monkeypatch):
    def broken(self, features, labels=None):
        raise RuntimeError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(MahalanobisScorer, "fit", broken)
    cfg = compose_cfg("+experiment=dn2_synthetic", "logger=none", "callbacks=none")
    with pytest.raises(RuntimeError, match="(?s)1 scorer.*failed.*mahalanobis.*converge"):
        run(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert "ood/synthetic_4_5/knn/auroc" in metrics
    assert not any("mahalanobis" in name for name in metrics)


EARLY = {
    "k_larger_than_the_data": (
        (*SCAN, "K=1000"),
        r"K=1000 clusters but only 64 normal training images: choose K <= 6",
    ),
    "misspelt_optimizer_key": (
        (*OURS, "+finetune.optimizer.lrr=0.1"),
        r"finetune: its optimizer or scheduler cannot be built.*lrr",
    ),
    "spawned_ddp": (
        (*OURS, "trainer=ddp_cpu", "trainer.strategy=ddp_spawn"),
        r"spawned workers cannot hand features.*trainer.strategy=ddp",
    ),
    "gpu_trainer_without_gpu": (
        (*OURS, "trainer=gpu"),
        r"no CUDA GPU is visible.*trainer=cpu.*trainer.accelerator=cpu trainer.devices=2",
    ),
    "all_missing_ood_sets": (
        (*OURS, "ood=cifar10_benchmarks", "paths.data_dir=nowhere"),
        r"(?s)4 of 5 data sets are missing.*cifar100.*svhn.*lsun.*lsun_fix",
    ),
    "unknown_timm_model": (
        ("+experiment=dn2_synthetic", "logger=none", "backbone=timm", "backbone.name=not_a_model"),
        r"backbone.name='not_a_model' is not a timm model",
    ),
}


@pytest.mark.parametrize("case", EARLY)
def test_bad_input_stops_before_any_stage_trains(compose_cfg, tmp_path, case):
    args, message = EARLY[case]
    with pytest.raises(Exception, match=message):
        run(compose_cfg(*args))
    assert trained_nothing(tmp_path)


GARBAGE = {
    # which garbage lr 1e6 makes (NaN weights, chance-level or constant scores) depends on the
    # stage seed, which depends on the config: any of them must stop the run
    "finetune_lr_1e6": (
        (*OURS, "finetune.optimizer.lr=1e6"),
        r"never beat chance|NaN or inf|gave every image the same score",
    ),
    "simclr_lr_1e6": (
        (*SCAN, "stage1.simclr.optimizer.lr=1e6"),
        r"NaN or inf|loss is (nan|inf)",
    ),
    "collapsed_clustering": (
        (*SCAN, "stage1.collapse.max_cluster_share=0.2"),
        r"the selflabel clustering collapsed: .* largest holds",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", GARBAGE)
def test_garbage_results_stop_the_run_with_the_cause(compose_cfg, case):
    args, message = GARBAGE[case]
    with pytest.raises(Exception, match=message):
        run(compose_cfg(*args))
