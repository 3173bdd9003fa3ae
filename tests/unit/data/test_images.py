"""Images in memory and in files: unusual image modes (16-bit, float, transparency) converted
correctly or refused naming the file; fingerprints of in-memory images; SCAN's neighbours
dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import folder
from PIL import Image
from torchvision import transforms as T

from ood_nolabels.core.neighbors import mine_neighbors
from ood_nolabels.data.datamodule import OODDataModule
from ood_nolabels.data.images import (
    ArrayImages,
    FileImages,
    NeighborsDataset,
    UnsupportedImageMode,
    to_rgb8,
)
from ood_nolabels.data.synthetic import SyntheticSource


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


# --- fingerprints -----------------------------------------------------------------------------


def test_in_memory_images_are_fingerprinted_by_their_pixels_and_labels():
    pixels = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    first = ArrayImages(pixels, np.array([0, 1])).fingerprint()
    assert ArrayImages(pixels.copy(), np.array([0, 1])).fingerprint() == first
    changed = pixels.copy()
    changed[1, 2, 3] += 1
    assert ArrayImages(changed, np.array([0, 1])).fingerprint() != first
    assert ArrayImages(pixels, np.array([1, 0])).fingerprint() != first
    assert ArrayImages(pixels).fingerprint() != first
    subset = ArrayImages(pixels, np.array([0, 1])).subset(np.array([True, False]))
    assert subset.fingerprint() not in (first, ArrayImages(pixels[:1], np.array([0])).fingerprint())


# --- the neighbour drawn as official data/custom_dataset.py L60-61, L71 draws it ---------------


def test_the_anchor_is_drawn_as_neighbour_one_time_in_k_plus_1():
    """data/custom_dataset.py: ``np.random.choice(self.indices[index], 1)`` over all k + 1."""
    features = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    neighbors = mine_neighbors(features, k=4, use_faiss=False, include_self=True)
    pixels = np.arange(30, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    dataset = NeighborsDataset(ArrayImages(pixels), neighbors, T.PILToTensor())
    torch.manual_seed(0)
    draws = 3000
    picked_self = sum(
        int(torch.equal(*dataset[i % 30][:2])) for i in range(draws)
    )  # every image differs, so equal views mean the anchor itself was drawn
    assert picked_self / draws == pytest.approx(1 / 5, abs=0.025)
