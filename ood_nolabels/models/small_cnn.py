"""A small randomly initialised CNN: the self-supervised backbone of the fast digits recipe."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ood_nolabels.models.backbones import Backbone


def conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNNBackbone(Backbone):
    """Four 3x3 conv blocks (two downsampling) and global average pooling.

    Trained from scratch by SimCLR in seconds per epoch on CPU, where a ResNet-18 would take
    minutes: the embedded digits benchmark uses it so stage 1 fits the CPU budget.
    """

    def __init__(
        self,
        image_size: int = 16,
        width: int = 32,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        model = nn.Sequential(
            conv_block(3, width, 1),
            conv_block(width, 2 * width, 2),
            conv_block(2 * width, 4 * width, 1),
            conv_block(4 * width, 4 * width, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        super().__init__(model, feature_dim=4 * width, image_size=image_size, mean=mean, std=std)
