"""Bad input stops early and clearly: missing sets, unreadable files and unusual image modes.

Everything here is found by ``OODDataModule.setup()``, before any stage trains: all missing data
sets in one error with a count, all unreadable image files in one error from an up-front pass, and
16-bit or otherwise unusual image modes converted correctly or refused naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from ood_nolabels.data.datamodule import OODDataModule
from ood_nolabels.data.folders import FolderSource
from ood_nolabels.data.images import FileImages, UnsupportedImageMode, to_rgb8
from ood_nolabels.data.synthetic import SyntheticSource
from ood_nolabels.data.torchvision_sets import SVHNSource


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


def folder(root: Path, name: str = "imagefolder_ood") -> FolderSource:
    return FolderSource(str(root), train_dir=None, test_dir=".", name=name)


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


# --- image modes ------------------------------------------------------------------------------


def gradient16() -> np.ndarray:
    return np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))


def test_16bit_png_keeps_its_gradient_instead_of_turning_white(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(gradient16()).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # stored and opened as 16-bit grayscale
    rgb = FileImages([path]).get_image(0)
    assert rgb.mode == "RGB"
    pixels = np.asarray(rgb)
    assert np.array_equal(pixels[..., 0], pixels[..., 2])
    row = pixels[0, :, 0].astype(int)
    expected = (gradient16()[0].astype(int) + 128) // 257  # value / 257, rounded
    assert np.array_equal(row, expected)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)
    assert pixels.mean() == pytest.approx(127.5, abs=1)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_16bit_modes_scale_to_8_bits(mode):
    image = Image.fromarray(np.array([[0, 128, 129, 257 * 100, 65535]], dtype=np.int32))
    if mode != "I":
        image = image.convert(mode)
    assert image.mode == mode
    assert np.asarray(to_rgb8(image, Path("x.png")))[0, :, 1].tolist() == [0, 0, 1, 100, 255]


def test_32bit_integer_beyond_16_bits_is_refused(tmp_path):
    path = tmp_path / "big.tif"
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(path)
    with pytest.raises(UnsupportedImageMode, match=r"(?s)big\.tif.*mode I.*70000"):
        FileImages([path]).get_image(0)


def test_float_image_is_refused_naming_file_and_mode(tmp_path):
    path = tmp_path / "depth.tif"
    Image.fromarray(np.random.default_rng(0).random((8, 8), dtype=np.float32)).save(path)
    with pytest.raises(UnsupportedImageMode, match=r"depth\.tif.*mode F"):
        FileImages([path]).get_image(0)


def test_transparent_pixels_are_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)  # transparent black...
    rgba[0, 0] = (255, 0, 0, 255)  # ...except one opaque red pixel
    rgba[0, 1] = (0, 0, 0, 128)  # and a half-transparent black one
    Image.fromarray(rgba).save(tmp_path / "a.png")
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 0, 0, 0, 255, 0])
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "p.png", transparency=0)  # palette entry 0 (black) transparent
    images = FileImages([tmp_path / "a.png", tmp_path / "p.png"])
    a = np.asarray(images.get_image(0))
    assert a[0, 0].tolist() == [255, 0, 0] and a[1, 1].tolist() == [255, 255, 255]
    assert a[0, 1].tolist() == [127, 127, 127]
    p = np.asarray(images.get_image(1))
    assert p[0, 0].tolist() == [255, 255, 255] and p[1, 1].tolist() == [0, 255, 0]


def test_8bit_modes_convert_and_modes_are_checked_up_front(tmp_path):
    Image.new("L", (2, 2), 77).save(tmp_path / "l.png")
    Image.new("CMYK", (2, 2), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    Image.new("1", (2, 2), 1).save(tmp_path / "b.png")
    images = FileImages(sorted(tmp_path.iterdir()))
    assert [np.asarray(images.get_image(i))[0, 0].tolist() for i in range(3)] == [
        [255, 255, 255],
        [255, 255, 255],
        [77, 77, 77],
    ]
    assert [to_rgb8(Image.new(m, (1, 1)), Path("x")).mode for m in ("LA", "RGBX")] == ["RGB"] * 2
    Image.fromarray(np.zeros((2, 2), dtype=np.float32)).save(tmp_path / "f.tif")
    dm = OODDataModule(SyntheticSource(classes=[0], per_class=2), {"o": folder(tmp_path)})
    with pytest.raises(RuntimeError, match=r"(?s)1 unreadable.*f\.tif.*mode F"):
        dm.setup()


@pytest.mark.parametrize(
    ("overrides", "expected"), [((), True), (("++data.check_images=false",), False)]
)
def test_config_switches_the_check(compose_cfg, overrides, expected):
    cfg = compose_cfg("dataset=synthetic", "ood=synthetic", *overrides)
    assert instantiate(cfg.data).check_images is expected
