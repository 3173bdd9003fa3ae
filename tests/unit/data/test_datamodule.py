"""The data module: loaders in order with indices, and bad input stopped early and clearly.

Everything below is found by ``OODDataModule.setup()``, before any stage trains: all missing
data sets in one error with a count, all unreadable image files in one error from an up-front
pass (the image modes themselves: tests/unit/data/test_images.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import folder
from hydra.utils import instantiate
from PIL import Image

from ood_nolabels.data.datamodule import NORMAL_TEST, NORMAL_TRAIN, OODDataModule
from ood_nolabels.data.folders import FolderSource
from ood_nolabels.data.synthetic import SyntheticSource
from ood_nolabels.data.torchvision_sets import SVHNSource
from ood_nolabels.models.backbones import image_transform


def write_rgb(path: Path, value: int = 100, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value, value // 2, 0)).save(path)
    return path


def write_truncated_jpeg(path: Path) -> Path:
    """A real JPEG cut in half: its header still opens, only decoding the pixels fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as image:  # the damage is invisible to a check that only opens files
        assert image.format == "JPEG" and image.size == (64, 64)
    return path


def normal_folder(root: Path) -> FolderSource:
    write_rgb(root / "train" / "a.png")
    write_rgb(root / "test" / "b.jpg")
    return FolderSource(str(root))


# --- missing data sets ------------------------------------------------------------------------


def test_every_missing_ood_set_is_named_at_once_with_a_count(tmp_path):
    write_rgb(tmp_path / "present" / "x.png")
    dm = OODDataModule(
        SyntheticSource(classes=[0], per_class=4),
        {
            "lsun": folder(tmp_path / "lsun", "lsun"),
            "present": folder(tmp_path / "present"),
            "svhn": SVHNSource(str(tmp_path / "svhn")),
        },
    )
    with pytest.raises(FileNotFoundError) as error:
        dm.setup()
    message = str(error.value)
    assert "2 of 4 data sets are missing" in message
    # each set's own message: where it was looked for, its expected layout and the hint
    assert "ood.lsun:" in message and str((tmp_path / "lsun").resolve()) in message
    assert "LSUN_resize/**/*.jpg" in message
    assert "ood.svhn:" in message and "test_32x32.mat" in message
    assert "dataset.download=true" in message and "OOD_DATA_DIR" in message
    assert "present" not in message.replace(str(tmp_path), "")
    assert dm.images == {}


def test_missing_normal_set_counts_once_with_both_splits(tmp_path):
    dm = OODDataModule(
        FolderSource(str(tmp_path / "mine")), {"o": folder(tmp_path / "nothing")}, batch_size=2
    )
    with pytest.raises(FileNotFoundError) as error:
        dm.setup()
    message = str(error.value)
    assert "2 of 2 data sets are missing" in message
    assert "dataset:" in message and "ood.o:" in message
    assert str(tmp_path / "mine" / "train") in message
    assert str(tmp_path / "mine" / "test") in message


# --- the up-front readability pass --------------------------------------------------------------


def test_truncated_jpeg_and_non_image_are_reported_together_by_setup(tmp_path):
    normal = normal_folder(tmp_path / "normal")
    write_rgb(tmp_path / "ood" / "good.jpg")
    truncated = write_truncated_jpeg(tmp_path / "ood" / "cut.jpg")
    text = tmp_path / "ood" / "notes.png"
    text.write_text("not an image")
    dm = OODDataModule(normal, {"mine": folder(tmp_path / "ood")})
    with pytest.raises(RuntimeError) as error:
        dm.setup()
    message = str(error.value)
    assert "2 unreadable image files" in message and "of 5 checked" in message
    assert str(truncated) in message and "truncated" in message
    assert str(text) in message
    assert "good.jpg" not in message
    assert "remove or replace these files" in message
    assert dm.images == {}  # nothing half-set-up that a later stage could train on


def test_only_the_files_in_use_are_checked(tmp_path):
    """A class selection checks only the files it keeps; in-memory sets need no check."""
    write_rgb(tmp_path / "n" / "train" / "a" / "1.png")
    (tmp_path / "n" / "train" / "b").mkdir()
    (tmp_path / "n" / "train" / "b" / "2.png").write_text("broken, but class 1 is not used")
    write_rgb(tmp_path / "n" / "test" / "a" / "3.png")
    write_truncated_jpeg(tmp_path / "n" / "test" / "a" / "4.jpg")
    normal = FolderSource(str(tmp_path / "n"), classes=[0])
    dm = OODDataModule(normal, {"far": SyntheticSource(classes=[4], per_class=2)})
    with pytest.raises(RuntimeError, match="1 unreadable image file ") as error:
        dm.setup()
    assert "4.jpg" in str(error.value) and "2.png" not in str(error.value)


def test_many_unreadable_files_are_listed_up_to_a_limit(tmp_path):
    for i in range(25):
        (tmp_path / "ood" / f"bad{i:02d}.png").parent.mkdir(exist_ok=True)
        (tmp_path / "ood" / f"bad{i:02d}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    dm = OODDataModule(SyntheticSource(classes=[0], per_class=4), {"o": folder(tmp_path / "ood")})
    with pytest.raises(RuntimeError) as error:
        dm.setup()
    message = str(error.value)
    assert "25 unreadable image files" in message
    assert "bad19.png" in message and "bad20.png" not in message
    assert "... and 5 more" in message


def test_readability_pass_logs_its_timing_and_can_be_switched_off(tmp_path, caplog):
    normal = normal_folder(tmp_path / "normal")
    text = tmp_path / "ood" / "notes.png"
    text.parent.mkdir()
    text.write_text("not an image")
    ood = {"mine": folder(tmp_path / "ood")}
    dm = OODDataModule(normal, ood, check_images=False)
    dm.setup()  # no pass: the file fails only when read
    with pytest.raises(RuntimeError, match="notes.png"):
        dm.images["mine"].get_image(0)

    write_rgb(text)  # replaced by a real image: the pass succeeds and says what it did
    with caplog.at_level(logging.INFO, logger="ood_nolabels.data.images"):
        OODDataModule(normal, ood).setup()
    assert any("checked 3 images in" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("overrides", "expected"), [((), True), (("++data.check_images=false",), False)]
)
def test_config_switches_the_check(compose_cfg, overrides, expected):
    cfg = compose_cfg("dataset=synthetic", "ood=synthetic", *overrides)
    assert instantiate(cfg.data).check_images is expected


# --- loaders ----------------------------------------------------------------------------------


def test_datamodule_loaders_in_order_with_indices():
    dm = OODDataModule(
        SyntheticSource(classes=[0, 1], per_class=6),
        {"far": SyntheticSource(classes=[4], per_class=6)},
        batch_size=4,
    )
    loaders = dm.eval_loaders(image_transform(20, (0.5,) * 3, (0.5,) * 3))
    assert list(loaders) == [NORMAL_TRAIN, NORMAL_TEST, "far"]
    images, indices = next(iter(loaders[NORMAL_TRAIN]))
    assert images.shape == (4, 3, 20, 20) and indices.tolist() == [0, 1, 2, 3]
    assert torch.equal(dm.train_labels(), torch.tensor([0] * 6 + [1] * 6))


def test_datamodule_rejects_bad_ood_config():
    with pytest.raises(ValueError, match="no OOD sets"):
        OODDataModule(SyntheticSource(), {})
    with pytest.raises(ValueError, match="reserved"):
        OODDataModule(SyntheticSource(), {NORMAL_TEST: SyntheticSource()})
