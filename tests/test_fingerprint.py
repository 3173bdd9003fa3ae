"""The data fingerprint that keys the cached stages: the images themselves, not their path."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from ood_nolabels.data.folders import FolderSource, find_images
from ood_nolabels.data.images import ArrayImages, FileImages


def write_images(folder, count=4, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        sub = folder / f"class{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        paths.append(sub / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_the_same_files_anywhere_share_a_fingerprint_and_a_rewritten_file_changes_it(tmp_path):
    write_images(tmp_path / "a" / "train")
    first = FolderSource(str(tmp_path / "a")).load("train").fingerprint()
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copy2)  # keeps times
    assert FolderSource(str(tmp_path / "b")).load("train").fingerprint() == first
    shutil.move(tmp_path / "a", tmp_path / "c")
    assert FolderSource(str(tmp_path / "c")).load("train").fingerprint() == first
    image = tmp_path / "c" / "train" / "class0" / "0.png"
    Image.new("RGB", (8, 8), "white").save(image)  # other pixels, a new modification time
    os.utime(image, ns=(0, image.stat().st_mtime_ns + 1))
    assert FolderSource(str(tmp_path / "c")).load("train").fingerprint() != first
    (tmp_path / "b" / "train" / "class1" / "extra.png").write_bytes(image.read_bytes())
    assert FolderSource(str(tmp_path / "b")).load("train").fingerprint() != first


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


def test_a_link_loop_is_walked_once(tmp_path, caplog):
    paths = write_images(tmp_path / "train", count=2)
    (tmp_path / "train" / "class0" / "up").symlink_to("..")  # a loop: up -> train
    (tmp_path / "train" / "again").symlink_to(tmp_path / "train" / "class1")  # a second link
    with caplog.at_level("WARNING"):
        found = find_images(tmp_path / "train")
    assert found == sorted(paths)
    assert "skipped 2 linked folder(s) already walked" in caplog.text
    assert len(FileImages(found).fingerprint()) == 64


@pytest.mark.parametrize("copy", [shutil.copy2, shutil.copy])
def test_copies_without_their_times_are_taken_for_new_images(tmp_path, copy):
    """The price of a stat-only fingerprint: a copy that resets the times retrains."""
    write_images(tmp_path / "a" / "train")
    first = FolderSource(str(tmp_path / "a")).load("train").fingerprint()
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=copy)
    for path in find_images(tmp_path / "b"):
        os.utime(path, ns=(0, path.stat().st_mtime_ns + (copy is shutil.copy)))
    same = FolderSource(str(tmp_path / "b")).load("train").fingerprint() == first
    assert same == (copy is shutil.copy2)
