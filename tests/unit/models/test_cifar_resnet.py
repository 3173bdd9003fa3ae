"""The CIFAR ResNet-18 keeps 32 px resolution in its stem and yields 512-d features."""

from __future__ import annotations

import torch
from torch import nn

from ood_nolabels.models.cifar_resnet import CifarResNet18Backbone


def test_forward_shape_and_stem() -> None:
    backbone = CifarResNet18Backbone()
    features = backbone(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 512) and backbone.feature_dim == 512
    conv1 = backbone.model.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and conv1.padding == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in backbone.modules())
    assert backbone.image_size == 32 and len(backbone.mean) == len(backbone.std) == 3


def test_stem_keeps_full_resolution() -> None:
    """The first residual stage sees 32x32 maps (an ImageNet stem would give 8x8)."""
    backbone = CifarResNet18Backbone().eval()
    seen = []
    backbone.model.layer1.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        backbone(torch.randn(1, 3, 32, 32))
    assert seen == [torch.Size([1, 64, 32, 32])]
