"""ResNet-18 adapted to 32 px images, the backbone SimCLR and SCAN train from scratch on CIFAR."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models import resnet18

from ood_nolabels.models.backbones import Backbone

# SCAN's CIFAR-10 normalisation (its configs' values, kept for comparability with its results).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


class CifarResNet18Backbone(Backbone):
    """Randomly initialised ResNet-18 with a 3x3 stride-1 stem and no max-pool.

    The ImageNet stem (7x7 stride 2 + max-pool) would shrink a 32 px image to 8 px before the
    first block; the CIFAR stem keeps full resolution, as in SimCLR's and SCAN's CIFAR models.
    """

    def __init__(
        self,
        image_size: int = 32,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        model = resnet18(weights=None)
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
        feature_dim = model.fc.in_features
        model.fc = nn.Identity()
        super().__init__(model, feature_dim=feature_dim, image_size=image_size, mean=mean, std=std)
