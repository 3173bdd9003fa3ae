"""Stage modules: SCAN head selection, self-label errors, loss guards."""

from functools import partial

import lightning as L
import pytest
import torch
from helpers import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader

from ood_nolabels.core.losses import NoConfidentSamplesError, scan_loss
from ood_nolabels.methods.pseudo_labels.base import check_num_clusters
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.modules.base import StageModule
from ood_nolabels.modules.scan import ClusterModel, SCANModule
from ood_nolabels.modules.selflabel import SelfLabelModule


def tiny_backbone(dim: int = 8) -> Backbone:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, dim))
    return Backbone(model, feature_dim=dim, image_size=4, mean=(0.5,) * 3, std=(0.5,) * 3)


def fit(module: L.LightningModule, loader: DataLoader, epochs: int = 1) -> None:
    quiet_trainer(max_epochs=epochs).fit(module, loader)


def frozen_sgd(params):
    return torch.optim.SGD(params, lr=0.0)


class AnchorNeighbors(torch.utils.data.Dataset):
    def __init__(self, n: int = 24) -> None:
        generator = torch.Generator().manual_seed(0)
        self.anchors = torch.randn(n, 3, 4, 4, generator=generator)
        self.neighbors = self.anchors + 0.1 * torch.randn(n, 3, 4, 4, generator=generator)

    def __len__(self) -> int:
        return len(self.anchors)

    def __getitem__(self, i):
        return self.anchors[i], self.neighbors[i], i


def test_scan_keeps_the_head_with_the_lowest_epoch_loss():
    torch.manual_seed(0)
    module = SCANModule(tiny_backbone(), num_clusters=3, optimizer=frozen_sgd, num_heads=4)
    loader = DataLoader(AnchorNeighbors(), batch_size=8)
    fit(module, loader)
    module.eval()
    with torch.no_grad():  # weights never moved (lr 0): recompute each head's mean batch loss
        expected = torch.stack(
            [
                torch.stack(
                    [
                        scan_loss(head(module.backbone(a)), head(module.backbone(n)), 5.0)[0]
                        for a, n, _ in loader
                    ]
                ).mean()
                for head in module.heads
            ]
        )
    torch.testing.assert_close(module.last_head_losses, expected, rtol=1e-4, atol=1e-5)
    assert module.best_head == int(expected.argmin())
    assert module.cluster_model().head is module.heads[module.best_head]


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


def test_scan_heads_only_freezes_the_backbone():
    module = SCANModule(tiny_backbone(), 3, optimizer=frozen_sgd, update_backbone=False)
    assert not any(p.requires_grad for p in module.backbone.parameters())
    assert all(p.requires_grad for p in module.heads.parameters())


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


def test_non_finite_loss_is_a_clear_error():
    module = StageModule(optimizer=frozen_sgd)
    with pytest.raises(FloatingPointError, match="Lower the learning rate"):
        module.checked(torch.tensor(float("nan")))
    assert module.checked(torch.tensor(1.5)) == 1.5
