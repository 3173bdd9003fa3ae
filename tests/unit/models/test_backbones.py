"""The backbone's evaluation preprocessing: the shorter side resized, then a centre crop, so
non-square images are not squashed.
"""

from __future__ import annotations

import numpy as np
import torch
from helpers import noise_image
from PIL import Image
from torch import nn
from torchvision import transforms as T

from ood_nolabels.models.backbones import Backbone


def framed_image(width: int = 48, height: int = 24) -> Image.Image:
    """Green, with red bands on the outer eighth of each side of the long axis."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 1] = 255
    pixels[:, : width // 8] = (255, 0, 0)
    pixels[:, -width // 8 :] = (255, 0, 0)
    return Image.fromarray(pixels)


def test_non_square_image_is_resized_on_the_shorter_side_and_centre_cropped():
    """Resize the short side to 16 (48x24 -> 32x16), keep the centre 16: the bands fall away."""
    backbone = Backbone(nn.Identity(), 3, image_size=16, mean=(0, 0, 0), std=(1, 1, 1))
    out = backbone.transform()(framed_image())
    assert out.shape == (3, 16, 16)
    assert out[0].max() < 0.05 and out[1].min() > 0.95  # no red left: not squashed


def test_square_images_are_preprocessed_as_before():
    """Offline and small backbones (crop_pct 1): a square image is just resized (digits)."""
    backbone = Backbone(nn.Identity(), 3, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    image = noise_image(20)
    squashed = T.Compose([T.Resize((16, 16), T.InterpolationMode.BICUBIC), T.ToTensor()])(image)
    assert torch.equal(backbone.transform()(image), (squashed - 0.5) / 0.25)
