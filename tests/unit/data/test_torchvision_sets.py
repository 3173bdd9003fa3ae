"""CIFAR-10/100 and SVHN in their real on-disk formats, written small in tmp_path, read back
through the sources.

torchvision verifies the md5 of every CIFAR/SVHN file against the official release. The tests
keep that check running and point it at the md5s of the files they wrote, by monkeypatching
the file tables (``train_list``/``test_list``/``meta``/``split_list``) on the torchvision
classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from helpers import md5, random_images, write_cifar
from torchvision.datasets import CIFAR10, CIFAR100, SVHN

from ood_nolabels.data.torchvision_sets import CIFAR10Source, CIFAR100Source, SVHNSource


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
