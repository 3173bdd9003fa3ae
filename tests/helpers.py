"""Small helpers shared by test modules: a quiet trainer, tiny backbones, a frozen optimizer."""

import lightning as L
import torch
from torch import nn

from ood_nolabels.models.backbones import Backbone


def quiet_trainer(**kwargs) -> L.Trainer:
    """A CPU trainer without logger, checkpoints, progress bar or summary."""
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**(defaults | kwargs))


def frozen_sgd(params) -> torch.optim.Optimizer:
    """An optimizer that never moves the weights (lr 0): losses can be recomputed afterwards."""
    return torch.optim.SGD(params, lr=0.0)


def conv_backbone(
    image_size: int = 16, channels: int = 6, pool: int = 2, batchnorm: bool = False
) -> Backbone:
    """conv 3x3 -> [BatchNorm] -> ReLU -> adaptive pool -> flatten: ``channels * pool**2`` dims.

    Seeded, so two calls build the same weights.
    """
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, channels, 3), *([nn.BatchNorm2d(channels)] if batchnorm else [])]
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(pool), nn.Flatten()]
    return Backbone(
        nn.Sequential(*layers), channels * pool**2, image_size, mean=(0.5,) * 3, std=(0.5,) * 3
    )


def linear_backbone(image_size: int = 4, dim: int = 8) -> Backbone:
    """flatten -> linear: the smallest backbone with parameters."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, dim))
    return Backbone(model, dim, image_size, mean=(0.5,) * 3, std=(0.5,) * 3)
