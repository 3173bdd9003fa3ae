"""Feature vectors computed once, served where a backbone is expected (cluster heads on cached
features: no image is decoded and nothing is augmented again)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def identity(value: torch.Tensor) -> torch.Tensor:
    return value


class PrecomputedFeatures(nn.Module):
    """The identity on ``(N, feature_dim)`` feature vectors, with the identity as its transform
    for training and evaluation alike: what SCAN and self-labelling heads train on in
    ``stage1=frozen_features``."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.feature_dim = int(feature_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features

    def transform(self, train: bool = False, **augment) -> Callable[[torch.Tensor], torch.Tensor]:
        return identity
