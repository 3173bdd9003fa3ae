"""Image folders: class subfolders, flat folders, layouts and their errors; the data
fingerprint that keys the cached stages (the images themselves, not their path).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from helpers import write_image
from PIL import Image

from ood_nolabels.data.folders import FolderSource, find_images
from ood_nolabels.data.images import FileImages


def test_folder_with_class_subdirs_is_labeled_by_sorted_name(tmp_path):
    write_image(tmp_path / "train" / "dog" / "b.JPG")
    write_image(tmp_path / "train" / "dog" / "deeper" / "c.jpeg")
    write_image(tmp_path / "train" / "cat" / "a.png")
    write_image(tmp_path / "train" / "cat" / "._a.png")  # macOS resource fork: skipped
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    images = FolderSource(str(tmp_path)).load("train")
    assert [p.relative_to(tmp_path / "train").as_posix() for p in images.paths] == [
        "cat/a.png",
        "dog/b.JPG",
        "dog/deeper/c.jpeg",
    ]
    assert images.labels.tolist() == [0, 1, 1]
    assert FolderSource(str(tmp_path), classes=[1]).load("train").labels.tolist() == [1, 1]
    assert images.get_image(0).mode == "RGB"


def test_flat_folder_is_unlabeled_and_dot_means_root(tmp_path):
    write_image(tmp_path / "b.png", 20)
    write_image(tmp_path / "a.bmp", 10)
    write_image(tmp_path / "more" / "c.webp", 30)
    source = FolderSource(str(tmp_path), train_dir=None, test_dir=".", name="imagefolder_ood")
    images = source.load("test")
    assert images.labels is None
    assert [p.name for p in images.paths] == ["a.bmp", "b.png", "c.webp"]
    assert np.asarray(images.get_image(1))[0, 0].tolist() == [20, 0, 0]
    with pytest.raises(ValueError, match="unlabeled"):
        FolderSource(str(tmp_path), test_dir=".", classes=[0]).load("test")


def test_null_split_raises_clear_error(tmp_path):
    write_image(tmp_path / "jpg" / "x.jpg")
    with pytest.raises(ValueError, match="flowers102 has no train split .train_dir is null"):
        FolderSource(str(tmp_path), train_dir=None, test_dir="jpg", name="flowers102").load("train")


@pytest.mark.parametrize("create_empty_dir", [False, True])
def test_missing_or_empty_folder_shows_layout(tmp_path, create_empty_dir):
    if create_empty_dir:
        (tmp_path / "test").mkdir()
    with pytest.raises(FileNotFoundError) as error:
        FolderSource(str(tmp_path), name="cub200", train_dir=None).load("test")
    assert "CUB_200_2011/images/<class>/*.jpg" in str(error.value)
    assert "OOD_DATA_DIR" in str(error.value)


def test_corrupt_image_names_the_file(tmp_path):
    bad = tmp_path / "test" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG but truncated")
    images = FolderSource(str(tmp_path)).load("test")
    with pytest.raises(RuntimeError, match="broken.png"):
        images.get_image(0)


def test_unknown_name_needs_a_layout(tmp_path):
    with pytest.raises(ValueError, match="no layout known"):
        FolderSource(str(tmp_path), name="mystery")
    assert FolderSource(str(tmp_path), name="mystery", layout="x/*.png").layout == "x/*.png"


# --- the fingerprint --------------------------------------------------------------------------


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
