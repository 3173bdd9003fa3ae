"""The embedded digits: a fixed stratified split, class selection, pixels."""

import numpy as np
import pytest

from ood_nolabels.data.digits import DigitsSource


def test_digits_split_is_stratified_disjoint_and_fixed():
    train = DigitsSource().load("train")
    test = DigitsSource().load("test")
    assert len(train) + len(test) == 1797
    assert len(test) == pytest.approx(0.3 * 1797, abs=1)
    train_counts = np.bincount(train.labels) / len(train)
    test_counts = np.bincount(test.labels) / len(test)
    np.testing.assert_allclose(train_counts, test_counts, atol=0.01)
    train_pixels = {train.images[i].tobytes() for i in range(len(train))}
    assert sum(test.images[i].tobytes() in train_pixels for i in range(len(test))) < 5
    again = DigitsSource().load("test")
    assert np.array_equal(again.images, test.images)


def test_digits_class_selection_and_pixels():
    normal = DigitsSource(classes=[0, 1, 2, 3, 4, 5]).load("test")
    ood = DigitsSource(classes=[6, 7, 8, 9]).load("test")
    assert set(normal.labels) == {0, 1, 2, 3, 4, 5} and set(ood.labels) == {6, 7, 8, 9}
    assert len(normal) + len(ood) == len(DigitsSource().load("test"))
    image = normal.get_image(0)
    assert image.size == (8, 8) and image.mode == "L"
    assert np.asarray(image).max() <= 255


def test_unknown_split_and_class_errors():
    with pytest.raises(ValueError, match="unknown split"):
        DigitsSource().load("val")
    with pytest.raises(ValueError, match=r"classes \[12\]"):
        DigitsSource(classes=[1, 12]).load("train")
