"""The synthetic gratings: deterministic and balanced."""

import numpy as np

from ood_nolabels.data.synthetic import SyntheticSource


def test_synthetic_is_deterministic_and_balanced():
    a = SyntheticSource(per_class=5).load("train")
    b = SyntheticSource(per_class=5).load("train")
    assert np.array_equal(a.images, b.images)
    assert np.bincount(a.labels).tolist() == [5] * 6
    assert not np.array_equal(a.images, SyntheticSource(per_class=5).load("test").images)
