"""The self-label module: no confident sample is a clear error, unless min_cluster_fraction
trains each cluster's more confident part.
"""

from functools import partial

import pytest
import torch
from helpers import fit, frozen_sgd, tiny_backbone
from torch import nn
from torch.utils.data import DataLoader

from ood_nolabels.core.losses import NoConfidentSamplesError
from ood_nolabels.modules.scan import ClusterModel
from ood_nolabels.modules.selflabel import SelfLabelModule


def test_selflabel_without_confident_samples_stops_with_a_clear_error():
    model = ClusterModel(tiny_backbone(), nn.Linear(8, 3))
    nn.init.zeros_(model.head.weight)  # uniform predictions: confidence 1/3 everywhere
    module = SelfLabelModule(model, optimizer=frozen_sgd, threshold=0.99)
    images = torch.randn(8, 3, 4, 4)
    views = [((image, image), i) for i, image in enumerate(images)]  # (weak, strong), index
    loader = DataLoader(views, batch_size=4)
    with pytest.raises(NoConfidentSamplesError, match="threshold 0.99"):
        fit(module, loader)


def test_selflabel_min_cluster_fraction_trains_clusters_below_the_threshold():
    """A model confident nowhere trains instead of stopping as above: each cluster's more
    confident half gets its own cluster as target."""
    torch.manual_seed(0)
    model = ClusterModel(tiny_backbone(), nn.Linear(8, 3))
    with torch.no_grad():
        model.head.weight.mul_(0.01)  # near-uniform predictions, all far below 0.99
    before = model.head.weight.detach().clone()
    module = SelfLabelModule(
        model, optimizer=partial(torch.optim.SGD, lr=0.5), min_cluster_fraction=0.5
    )
    images = torch.randn(8, 3, 4, 4)
    views = [((image, image), i) for i, image in enumerate(images)]
    fit(module, DataLoader(views, batch_size=8))
    assert not torch.equal(model.head.weight, before)
