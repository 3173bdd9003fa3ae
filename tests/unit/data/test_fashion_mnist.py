"""Fashion-MNIST from tiny idx files written in the original format (the suite never needs the
Debian package): gzipped or not, flat or in torchvision's layout, classes, subsamples, errors."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from ood_nolabels.data.datamodule import OODDataModule
from ood_nolabels.data.fashion_mnist import FILES, FashionMNISTSource

PER_CLASS = {"train": 4, "test": 2}


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx format: magic (0, 0, type 0x08 = uint8, number of dimensions), sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_split(folder: Path, split: str, gzipped: bool) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(10), PER_CLASS[split])
    rng = np.random.default_rng(len(labels))
    images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(len(labels))  # each image tells its position
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(FILES[split], (images, labels), strict=True):
        if gzipped:
            with gzip.open(folder / f"{name}.gz", "wb") as file:
                file.write(idx_bytes(array))
        else:
            (folder / name).write_bytes(idx_bytes(array))
    return images, labels


@pytest.mark.parametrize("gzipped", [True, False])
@pytest.mark.parametrize("layout", [".", "FashionMNIST/raw"])
def test_the_idx_files_are_read_pixel_for_pixel(tmp_path, gzipped, layout):
    images, labels = write_split(tmp_path / layout, "train", gzipped)
    source = FashionMNISTSource([tmp_path / "elsewhere", tmp_path], classes=[1, 3])
    loaded = source.load("train")
    keep = np.isin(labels, [1, 3])
    assert len(loaded) == keep.sum() == 8
    assert np.array_equal(loaded.labels, labels[keep])
    for i, expected in enumerate(images[keep]):
        assert np.array_equal(np.asarray(loaded.get_image(i)), expected)


def test_the_ood_set_is_every_class_that_is_not_normal(tmp_path):
    write_split(tmp_path, "test", gzipped=True)
    ood = FashionMNISTSource([tmp_path], exclude_classes=[0, 1, 2, 3, 4, 5]).load("test")
    assert sorted(set(ood.labels.tolist())) == [6, 7, 8, 9] and len(ood) == 8
    with pytest.raises(ValueError, match="classes or exclude_classes, not both"):
        FashionMNISTSource([tmp_path], classes=[0], exclude_classes=[1])


def test_the_training_subsample_is_per_class_fixed_and_the_test_split_whole(tmp_path):
    write_split(tmp_path, "train", gzipped=False)
    write_split(tmp_path, "test", gzipped=False)
    source = FashionMNISTSource([tmp_path], classes=[0, 1, 2], train_per_class=3)
    train = source.load("train")
    assert np.bincount(train.labels).tolist() == [3, 3, 3]
    positions = [np.asarray(train.get_image(i))[0, 0] for i in range(len(train))]
    again = FashionMNISTSource([tmp_path], classes=[0, 1, 2], train_per_class=3).load("train")
    assert positions == [np.asarray(again.get_image(i))[0, 0] for i in range(len(again))]
    other = FashionMNISTSource([tmp_path], classes=[0, 1, 2], train_per_class=3, subsample_seed=1)
    assert positions != [np.asarray(other.load("train").get_image(i))[0, 0] for i in range(9)]
    assert len(source.load("test")) == 6  # the test split is never subsampled
    with pytest.raises(ValueError, match=r"train_per_class=5 but class 0 \(T-shirt/top\) has 4"):
        FashionMNISTSource([tmp_path], classes=[0], train_per_class=5).load("train")


def test_missing_files_name_the_folders_the_files_and_the_package(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        FashionMNISTSource([tmp_path / "a", tmp_path / "b"]).load("train")
    message = str(error.value)
    assert f"{tmp_path / 'a'}\n" in message and f"{tmp_path / 'b'}\n" in message
    assert "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_a_damaged_file_is_named(tmp_path):
    write_split(tmp_path, "train", gzipped=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")
    with pytest.raises(RuntimeError, match="cannot read the Fashion-MNIST files .*train-images"):
        FashionMNISTSource([tmp_path]).load("train")


def test_the_configs_hold_out_the_classes_that_are_not_normal(compose_cfg, tmp_path):
    write_split(tmp_path / "data" / "fashion_mnist", "train", gzipped=True)
    write_split(tmp_path / "data" / "fashion_mnist", "test", gzipped=True)
    cfg = compose_cfg("dataset=fashion_mnist", "ood=fashion_mnist", "dataset.classes=[4,5,6]")
    data: OODDataModule = instantiate(cfg.data)
    data.setup()
    assert sorted(set(data.images["normal_train"].labels.tolist())) == [4, 5, 6]
    held_out = set(data.images["held_out_classes"].labels.tolist())
    assert held_out == {0, 1, 2, 3, 7, 8, 9}
