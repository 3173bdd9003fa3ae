"""Features gathered from several ranks: in dataset order, the sampler's padding dropped."""

import torch

from ood_nolabels.core.gather import unique_by_index


def test_unique_by_index_orders_and_drops_padding():
    features = torch.tensor([[3.0], [1.0], [0.0], [2.0], [0.0]])
    indices = torch.tensor([3, 1, 0, 2, 0])  # index 0 padded twice, as DistributedSampler does
    assert unique_by_index(features, indices).flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
