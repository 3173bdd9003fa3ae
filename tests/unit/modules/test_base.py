"""The stage module base: non-finite losses stop clearly; the finetuning learning rates (the
paper's per-step cosine from 1e-5 to 1e-6, the digits recipe's per-epoch cosine).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import frozen_sgd, quiet_trainer
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader

from ood_nolabels.modules.base import StageModule


def test_non_finite_loss_is_a_clear_error():
    module = StageModule(optimizer=frozen_sgd)
    with pytest.raises(FloatingPointError, match="Lower the learning rate"):
        module.checked(torch.tensor(float("nan")))
    assert module.checked(torch.tensor(1.5)) == 1.5


# -- the finetuning learning rate ----------------------------------------------------------------


class LrRecorder(StageModule):
    """A one-layer stage that records the learning rate of every optimizer step."""

    def __init__(self, optimizer, scheduler) -> None:
        super().__init__(optimizer, scheduler)
        self.layer = nn.Linear(2, 1)
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return self.layer(batch).pow(2).mean()


def finetune_lrs(cfg, samples: int, batch_size: int) -> list[float]:
    module = LrRecorder(instantiate(cfg.optimizer), instantiate(cfg.scheduler))
    loader = DataLoader(torch.randn(samples, 2), batch_size=batch_size)
    quiet_trainer(max_epochs=cfg.epochs).fit(module, loader)
    return module.lrs


def test_paper_finetuning_anneals_per_step_from_1e_5_to_1e_6(compose_cfg):
    """The paper: lr 1e-5 -> 1e-6 with a cosine, reached at the last step."""
    cfg = compose_cfg("finetune=paper").finetune
    lrs = finetune_lrs(cfg, samples=22, batch_size=4)  # 6 batches (last partial) x 5 epochs
    assert cfg.epochs == 5 and len(lrs) == 30
    assert lrs[0] == pytest.approx(1e-5, rel=1e-9)
    assert lrs[-1] == pytest.approx(1e-6, rel=1e-9)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))  # a new lr every step
    t = np.arange(30) / 29
    expected = 1e-6 + (1e-5 - 1e-6) * (1 + np.cos(np.pi * t)) / 2
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)


def test_digits_finetuning_keeps_its_per_epoch_cosine(compose_cfg):
    cfg = compose_cfg("finetune=digits").finetune
    lrs = np.array(finetune_lrs(cfg, samples=12, batch_size=4)).reshape(cfg.epochs, 3)
    assert np.all(lrs == lrs[:, :1])  # constant within an epoch
    epochs = np.arange(cfg.epochs)
    expected = 2e-5 + (2e-4 - 2e-5) * (1 + np.cos(np.pi * epochs / cfg.epochs)) / 2
    np.testing.assert_allclose(lrs[:, 0], expected, rtol=1e-6)
