"""K is checked once, with a message naming the fix."""

import pytest

from ood_nolabels.methods.pseudo_labels.base import check_num_clusters


@pytest.mark.parametrize(
    "k, message",
    [
        (1, r"K \(the number of clusters\) must be >= 2, got 1"),
        ("abc", r"K='abc': K \(the number of clusters\) must be an integer >= 2 or 'auto'"),
        (2.5, r"K=2.5: K .* must be an integer"),
        (True, r"K=True: K .* must be an integer"),
        (31, r"K=31 clusters but only 30 normal training images: choose K <= 3"),
    ],
)
def test_k_is_checked_once_with_a_message_naming_the_fix(k, message):
    with pytest.raises(ValueError, match=message):
        check_num_clusters(k, 30)
    assert check_num_clusters(3, 30) == 3
