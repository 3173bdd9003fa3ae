"""SimCLR under 2-process CPU DDP sees the negatives of the whole global batch."""

import pytest
import torch
from helpers import frozen_sgd, quiet_trainer
from torch import nn
from torch.utils.data import DataLoader

from ood_nolabels.core.losses import nt_xent
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.modules.simclr import SimCLRModule


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
