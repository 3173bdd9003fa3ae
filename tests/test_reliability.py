"""Bad input and garbage results, as a new user meets them: each stops early, clearly, non-zero.

Every case runs the real command line (``python -m ood_nolabels.train``) and asserts the exit
code and the message; "early" cases also assert that no stage trained (no artifact appeared).
"""

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ood_nolabels.scorers.mahalanobis import MahalanobisScorer
from ood_nolabels.train import run

ROOT = Path(__file__).resolve().parents[1]
OURS = ("+experiment=ours_synthetic", "logger=none", "callbacks=none")
SCAN = ("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    command = [
        sys.executable,
        "-m",
        "ood_nolabels.train",
        *args,
        f"paths.artifact_dir={tmp_path}/artifacts",
        f"hydra.run.dir={tmp_path}/run",
    ]
    return subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
    )


def trained_nothing(tmp_path: Path) -> bool:
    artifacts = tmp_path / "artifacts"
    return not artifacts.exists() or not any(artifacts.glob("*-*[0-9a-f]"))


def image_folder(root: Path, broken: bool) -> None:
    """imagefolder_ood/: two good JPEGs and, if ``broken``, one cut in half."""
    folder = root / "imagefolder_ood"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    if broken:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
        (folder / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


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


@pytest.mark.slow
def test_a_truncated_image_among_the_ood_images_stops_before_training(tmp_path):
    image_folder(tmp_path / "data", broken=True)
    result = cli(tmp_path, *OURS, "ood=imagefolder", f"paths.data_dir={tmp_path}/data")
    assert result.returncode != 0
    assert "1 unreadable image file" in result.stderr and "cut.jpg" in result.stderr
    assert trained_nothing(tmp_path)


GARBAGE = {
    "finetune_lr_1e6": ((*OURS, "finetune.optimizer.lr=1e6"), r"never beat chance|NaN or inf"),
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
@pytest.mark.parametrize("case", [*EARLY, *GARBAGE])
def test_bad_input_or_garbage_exits_non_zero_with_the_cause(tmp_path, case):
    """Bad input stops before any stage trains; garbage results stop the run when they appear."""
    args, message = EARLY[case] if case in EARLY else GARBAGE[case]
    result = cli(tmp_path, *args)
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr[-2000:]
    if case in EARLY:
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
