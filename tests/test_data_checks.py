"""Bad input stops early and clearly: missing sets, unreadable files and unusual image modes.

Everything here is found by ``OODDataModule.setup()``, before any stage trains: all missing data
sets in one error with a count, all unreadable image files in one error from an up-front pass, and
16-bit or otherwise unusual image modes converted correctly or refused naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ood_nolabels.data.folders import FolderSource
from ood_nolabels.data.images import FileImages, UnsupportedImageMode, to_rgb8


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


def test_8bit_modes_still_convert(tmp_path):
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
