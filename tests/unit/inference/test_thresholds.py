"""The detector's thresholds on the normal test scores."""

import pytest
import torch

from ood_nolabels.inference.thresholds import threshold_keeping


def test_threshold_keeps_the_requested_fraction_of_normal_scores():
    scores = torch.randperm(100).float()  # 0..99 in random order
    assert threshold_keeping(scores, 0.95) == 94.0  # 95 of 100 at or below, not 96
    assert threshold_keeping(scores, 1.0) == 99.0
    assert threshold_keeping(torch.arange(20.0), 0.95) == 18.0  # ceil(19) - 1
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        threshold_keeping(scores, 0.0)
