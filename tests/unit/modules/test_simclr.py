"""SimCLR: views drawn on the batch's device; under 2-process CPU DDP, the negatives of the whole
global batch.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from helpers import conv_backbone, frozen_sgd, image, quiet_trainer
from torch import nn
from torch.utils.data import DataLoader

from ood_nolabels.core.losses import nt_xent
from ood_nolabels.data.augment import (
    batch_simclr_augment,
)
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.modules.simclr import SimCLRModule

SIZE = 32


def module() -> SimCLRModule:
    torch.manual_seed(0)
    backbone = Backbone(nn.Sequential(nn.Flatten(), nn.Linear(12, 6)), 6, 2, (0.5,) * 3, (0.5,) * 3)
    return SimCLRModule(backbone, frozen_sgd, hidden_dim=8, projection_dim=4, temperature=0.5)


def views() -> list:
    generator = torch.Generator().manual_seed(1)
    first = torch.randn(8, 3, 2, 2, generator=generator)
    second = first + 0.3 * torch.randn(8, 3, 2, 2, generator=generator)
    return [((first[i], second[i]), i) for i in range(8)]


@pytest.mark.slow
def test_ddp_loss_equals_the_single_process_loss_on_the_global_batch():
    reference_module = module().eval()
    data = views()
    with torch.no_grad():
        z1 = reference_module(torch.stack([d[0][0] for d in data]))
        z2 = reference_module(torch.stack([d[0][1] for d in data]))
    expected = nt_xent(z1, z2, temperature=0.5)

    trainer = quiet_trainer(max_epochs=1, devices=2, strategy="ddp_spawn")
    # No dropout or BatchNorm: train and eval mode compute the same projections.
    trainer.fit(module(), DataLoader(data, batch_size=4))
    logged = trainer.callback_metrics["simclr/train_loss_epoch"]
    torch.testing.assert_close(logged, expected, rtol=1e-5, atol=1e-5)
    per_rank = nt_xent(z1[::2], z2[::2], temperature=0.5)  # what a rank alone would compute
    assert not torch.isclose(per_rank, expected)


def test_simclr_stage_trains_with_views_drawn_after_the_transfer():
    """The loader yields uint8 images; the module draws both views on the batch's device."""
    torch.manual_seed(0)
    backbone = conv_backbone(image_size=SIZE)
    augment = batch_simclr_augment(SIZE, (0.5,) * 3, (0.5,) * 3)
    module = SimCLRModule(
        backbone,
        partial(torch.optim.SGD, lr=0.1),
        hidden_dim=8,
        projection_dim=4,
        batch_augment=augment,
    )
    images = [image(seed=i) for i in range(8)]
    dataset = [(augment.loader_transform()(x), i) for i, x in enumerate(images)]
    before = [p.clone() for p in backbone.parameters()]
    quiet_trainer(max_epochs=1).fit(module, torch.utils.data.DataLoader(dataset, batch_size=8))
    assert any(not torch.equal(a, b) for a, b in zip(before, backbone.parameters(), strict=True))
    assert not any(k.startswith("batch_augment") for k in module.state_dict())
