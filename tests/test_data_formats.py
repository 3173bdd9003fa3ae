"""Real on-disk dataset formats, written small in tmp_path, read back through the sources.

torchvision verifies the md5 of every CIFAR/SVHN file against the official release. The tests keep
that check running and point it at the md5s of the files they wrote, by monkeypatching the file
tables (``train_list``/``test_list``/``meta``/``split_list``) on the torchvision classes.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100, SVHN

from ood_nolabels.data.folders import FolderSource
from ood_nolabels.data.images import ImageSource
from ood_nolabels.data.torchvision_sets import CIFAR10Source, CIFAR100Source, SVHNSource

CONF = Path(__file__).resolve().parents[1] / "conf"
HW = 32


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def random_images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, HW, HW, 3), dtype=np.uint8)


def write_cifar(root: Path, reader: type[CIFAR10], monkeypatch: pytest.MonkeyPatch, seed: int = 0):
    """Write every file of ``reader``'s release; returns {split: (images, labels)}.

    Batches hold rows of 3072 bytes (the R, G, B planes) as in the official pickles; keys are
    ``str``, which is what the Python 2 originals load as under torchvision's latin1 decoding.
    """
    rng = np.random.default_rng(seed)
    folder = root / reader.base_folder
    folder.mkdir(parents=True)
    label_key = "labels" if reader is CIFAR10 else "fine_labels"
    expected = {}
    for split, listed in (("train", reader.train_list), ("test", reader.test_list)):
        images, labels, table = [], [], []
        for name, _md5 in listed:
            batch = random_images(rng, 3)
            batch_labels = rng.integers(0, 10, len(batch)).tolist()
            rows = batch.transpose(0, 3, 1, 2).reshape(len(batch), 3 * HW * HW)
            with open(folder / name, "wb") as file:
                pickle.dump({"data": rows, label_key: batch_labels}, file, protocol=2)
            images.append(batch)
            labels += batch_labels
            table.append([name, md5(folder / name)])
        monkeypatch.setattr(reader, f"{split}_list", table)
        expected[split] = (np.concatenate(images), np.array(labels))
    meta = folder / reader.meta["filename"]
    with open(meta, "wb") as file:
        pickle.dump({reader.meta["key"]: [f"class{i}" for i in range(10)]}, file, protocol=2)
    monkeypatch.setattr(reader, "meta", {**reader.meta, "md5": md5(meta)})
    return expected


def write_svhn(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """``X`` is (H, W, C, N) and ``y`` (N, 1) with 10 standing for digit 0, as in the .mat files."""
    rng = np.random.default_rng(1)
    table = dict(SVHN.split_list)
    expected = {}
    for split in ("train", "test"):
        images = random_images(rng, 4)
        labels = np.array([10, 1, 5, 10])
        path = root / table[split][1]
        scipy.io.savemat(path, {"X": images.transpose(1, 2, 3, 0), "y": labels[:, None]})
        table[split] = [table[split][0], table[split][1], md5(path)]
        expected[split] = (images, labels % 10)
    monkeypatch.setattr(SVHN, "split_list", table)
    return expected


def write_image(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 0, 0)).save(path)


def assert_round_trip(images, expected_images: np.ndarray, expected_labels: np.ndarray) -> None:
    assert np.array_equal(images.images, expected_images)
    assert np.array_equal(np.asarray(images.get_image(1)), expected_images[1])
    assert np.array_equal(images.labels, expected_labels)


@pytest.mark.parametrize(
    ("reader", "source"), [(CIFAR10, CIFAR10Source), (CIFAR100, CIFAR100Source)]
)
def test_cifar_pickles_round_trip(tmp_path, monkeypatch, reader, source):
    expected = write_cifar(tmp_path, reader, monkeypatch)
    for split in ("train", "test"):
        images = source(str(tmp_path)).load(split)
        assert_round_trip(images, *expected[split])
    picked = source(str(tmp_path), classes=[int(expected["train"][1][0])]).load("train")
    assert set(picked.labels.tolist()) == {int(expected["train"][1][0])}
    assert len(picked) == int(np.sum(expected["train"][1] == expected["train"][1][0]))


def test_svhn_mat_round_trip_maps_label_10_to_0(tmp_path, monkeypatch):
    expected = write_svhn(tmp_path, monkeypatch)
    for split in ("train", "test"):
        images = SVHNSource(str(tmp_path)).load(split)
        assert_round_trip(images, *expected[split])
    assert SVHNSource(str(tmp_path), classes=[0]).load("test").labels.tolist() == [0, 0]


@pytest.mark.parametrize(
    ("source", "names"),
    [
        (CIFAR10Source, ["cifar-10-batches-py/data_batch_1", "data_batch_5", "test_batch"]),
        (CIFAR100Source, ["cifar-100-python/train", "cifar-100-python/test", "meta"]),
        (SVHNSource, ["train_32x32.mat"]),
    ],
)
def test_missing_torchvision_data_names_files_and_download(tmp_path, source, names):
    with pytest.raises(FileNotFoundError) as error:
        source(str(tmp_path / "nowhere")).load("train")
    message = str(error.value)
    assert all(name in message for name in names)
    assert "dataset.download=true" in message and "OOD_DATA_DIR" in message


def test_files_failing_md5_give_a_clear_error(tmp_path, monkeypatch):
    write_cifar(tmp_path, CIFAR10, monkeypatch)
    monkeypatch.undo()  # restore the official md5s, which the written files do not match
    with pytest.raises(RuntimeError, match="md5 integrity check"):
        CIFAR10Source(str(tmp_path)).load("test")


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


def instantiate_file(path: Path, data_dir: Path):
    """The config file built as a run would, beside the data set of the same name (which an OOD
    config may refer to, e.g. for the classes it holds out)."""
    config = OmegaConf.create({"paths": {"data_dir": str(data_dir)}, "item": OmegaConf.load(path)})
    dataset = CONF / "dataset" / path.name
    if dataset.is_file():
        config.dataset = OmegaConf.load(dataset)
    return instantiate(config.item)


@pytest.mark.parametrize("path", sorted((CONF / "dataset").glob("*.yaml")), ids=lambda p: p.stem)
def test_dataset_configs_instantiate(tmp_path, path):
    assert isinstance(instantiate_file(path, tmp_path), ImageSource)


@pytest.mark.parametrize("path", sorted((CONF / "ood").glob("*.yaml")), ids=lambda p: p.stem)
def test_ood_configs_name_test_folders(tmp_path, path):
    """Every OOD entry loads its test split from the folder its config and layout name."""
    for name, source in instantiate_file(path, tmp_path).items():
        assert isinstance(source, ImageSource), name
        if isinstance(source, FolderSource):
            assert source.dirs["train"] is None
            assert source.dirs["test"] == "." or source.dirs["test"] in source.layout
            write_image(source.root / source.dirs["test"] / "x" / "img.jpg")
            assert len(source.load("test")) == 1


def test_cifar10_config_reads_data_dir(tmp_path, monkeypatch):
    expected = write_cifar(tmp_path / "cifar10", CIFAR10, monkeypatch)
    images = instantiate_file(CONF / "dataset" / "cifar10.yaml", tmp_path).load("test")
    assert np.array_equal(images.images, expected["test"][0])
