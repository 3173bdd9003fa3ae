"""Bad input as a new user meets it on the command line (``python -m ood_nolabels.train``):
the exit code, the message on stderr, and no stage trained."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import trained_nothing
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
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


@pytest.mark.slow
def test_a_truncated_image_among_the_ood_images_stops_before_training(tmp_path):
    image_folder(tmp_path / "data", broken=True)
    result = cli(tmp_path, *OURS, "ood=imagefolder", f"paths.data_dir={tmp_path}/data")
    assert result.returncode != 0
    assert "1 unreadable image file" in result.stderr and "cut.jpg" in result.stderr
    assert trained_nothing(tmp_path)


@pytest.mark.slow
def test_bad_input_exits_non_zero_with_the_cause_on_stderr(tmp_path):
    """The command line's side of the fault matrix (the cases run in-process in
    integration/test_faults.py): the cause on stderr, a non-zero exit, nothing trained."""
    result = cli(tmp_path, *SCAN, "K=1000")
    assert result.returncode != 0
    assert re.search(
        r"K=1000 clusters but only 64 normal training images: choose K <= 6", result.stderr
    )
    assert trained_nothing(tmp_path)
