"""The SCAN module: head selection, heads-only training, two forward calls per batch.

Against the official SCAN code (github.com/wvangansbeke/Unsupervised-Classification, snapshot
952ec31): ``scan.py`` L99, L107-112, L130-131 score every head after every epoch with
``utils/evaluate_utils.py`` L87-119 (``scan_evaluate``: BCE of ``<p_anchor, p_candidate>``
over all (anchor, candidate) pairs minus the entropy of the mean prediction, weight 1) and keep
the lowest head; the anchors and neighbours go through the model in two calls
(``scan_train``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import fit, frozen_sgd, quiet_trainer, tiny_backbone
from torch.utils.data import DataLoader

from ood_nolabels.core.losses import scan_loss
from ood_nolabels.modules.scan import SCANModule


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


def test_scan_heads_only_freezes_the_backbone():
    module = SCANModule(tiny_backbone(), 3, optimizer=frozen_sgd, update_backbone=False)
    assert not any(p.requires_grad for p in module.backbone.parameters())
    assert all(p.requires_grad for p in module.heads.parameters())


# -- head selection and forward calls as the official code ----------------------------------------


class Images(torch.utils.data.Dataset):
    """``(image, index)`` like the datamodule's loaders, or SCAN's ``(anchor, neighbour, index)``
    with the neighbour drawn from ``neighbors``."""

    def __init__(self, n: int = 24, neighbors: torch.Tensor | None = None) -> None:
        self.images = torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        self.neighbors = neighbors

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        if self.neighbors is None:
            return self.images[i], i
        j = int(self.neighbors[i, torch.randint(self.neighbors.shape[1], ())])
        return self.images[i], self.images[j], i


def official_selection_losses(logits: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """scan_evaluate in numpy: ``BCE(<p_i, p_j>, 1)`` over all pairs - entropy(mean p)."""
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    similarity = (probs @ probs.T)[np.arange(len(probs))[:, None], neighbors]
    consistency = -np.maximum(np.log(similarity), -100).mean()
    mean = np.maximum(probs.mean(axis=0), 1e-8)
    return consistency - (-(mean * np.log(mean)).sum())


def test_validation_selection_picks_the_lowest_label_free_loss_with_entropy_weight_1():
    torch.manual_seed(0)
    n, heads = 24, 5
    neighbors = torch.cat([torch.arange(n)[:, None], torch.randint(n, (n, 3))], dim=1)
    module = SCANModule(
        tiny_backbone(),
        num_clusters=3,
        optimizer=frozen_sgd,  # lr 0: the weights validated are the weights checked here
        num_heads=heads,
        entropy_weight=5.0,
        selection="validation",
        neighbors=neighbors,
    )
    order = torch.randperm(n).tolist()  # batches out of dataset order: placed by their indices
    module.validation_loader = DataLoader(Images(n), batch_size=5, sampler=order)
    quiet_trainer(max_epochs=1).fit(module, DataLoader(Images(n, neighbors), batch_size=8))

    module.eval()
    with torch.no_grad():
        features = module.backbone(Images(n).images)
        expected = np.array(
            [
                official_selection_losses(head(features).double().numpy(), neighbors.numpy())
                for head in module.heads
            ]
        )
    np.testing.assert_allclose(module.val_head_losses.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert len(set(np.round(expected, 4))) == heads  # the heads differ: the argmin means something
    assert module.best_head == int(expected.argmin())
    assert module.cluster_model().head is module.heads[int(expected.argmin())]
    logged = module.trainer.callback_metrics["scan/val_loss"].item()
    assert logged == pytest.approx(expected.min(), rel=1e-4)


def test_anchors_and_neighbours_are_forwarded_in_two_calls():
    """BatchNorm running statistics: anchors' batch first, then the neighbours' (momentum 0.1)."""
    data = Images(8, torch.roll(torch.arange(8), 1)[:, None])
    backbone = tiny_backbone(batch_norm=True)
    module = SCANModule(backbone, num_clusters=3, optimizer=frozen_sgd, num_heads=1)
    anchors, neighbors, _ = next(iter(DataLoader(data, batch_size=8)))
    batch_norm = backbone.model[1]
    quiet_trainer(max_epochs=1).fit(module, DataLoader(data, batch_size=8))
    assert int(batch_norm.num_batches_tracked) == 2
    after_anchors = 0.1 * anchors.flatten(1).mean(0)
    expected = 0.9 * after_anchors + 0.1 * neighbors.flatten(1).mean(0)
    torch.testing.assert_close(batch_norm.running_mean, expected)
