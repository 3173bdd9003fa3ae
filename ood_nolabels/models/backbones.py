"""Pretrained feature extractors with their own preprocessing.

A :class:`Backbone` maps a batch of images to ``(N, feature_dim)`` features and knows how its
inputs must be prepared (size, normalisation), so datasets never hard-code a model's statistics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from ood_nolabels.data.images import to_rgb

log = logging.getLogger(__name__)


RESIZE_MODES = ("shortest", "squash")


def image_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
    train: bool = False,
    crop_scale: tuple[float, float] = (0.6, 1.0),
    hflip: bool = True,
    crop_pct: float = 1.0,
    resize_mode: str = "shortest",
) -> Callable[[Image.Image], torch.Tensor]:
    """A square ``image_size`` input, normalised.

    Training: a random resized crop (and flip). Evaluation, as timm's and open_clip's own
    preprocessing: resize to ``floor(image_size / crop_pct)`` (the shorter side with
    ``resize_mode="shortest"``, so the aspect ratio is kept; both sides with ``"squash"``),
    then crop the centre ``image_size`` square. A square image with ``crop_pct=1`` is just
    resized.
    """
    mode = T.InterpolationMode(interpolation)
    if train:
        geometry = [T.RandomResizedCrop(image_size, scale=crop_scale, interpolation=mode)]
        geometry += [T.RandomHorizontalFlip()] if hflip else []
    else:
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode={resize_mode!r}; expected one of {RESIZE_MODES}")
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        scale_size = math.floor(image_size / crop_pct)
        size = scale_size if resize_mode == "shortest" else (scale_size, scale_size)
        geometry = [T.Resize(size, interpolation=mode), T.CenterCrop(image_size)]
    return T.Compose([to_rgb, *geometry, T.ToTensor(), T.Normalize(mean, std)])


class Backbone(nn.Module):
    """Base class: ``forward(images) -> features`` plus the preprocessing the weights expect.

    Evaluation preprocessing (see :func:`image_transform`): ``crop_pct`` and ``resize_mode``
    come from the pretrained model's own preprocessing (timm, open_clip); the defaults (keep the
    aspect ratio, no border crop) suit the offline and small backbones, whose square inputs are
    then simply resized.
    """

    def __init__(
        self,
        model: nn.Module,
        feature_dim: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bicubic",
        crop_pct: float = 1.0,
        resize_mode: str = "shortest",
    ) -> None:
        super().__init__()
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode={resize_mode!r}; expected one of {RESIZE_MODES}")
        self.model = model
        self.feature_dim = int(feature_dim)
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation
        self.crop_pct = float(crop_pct)
        self.resize_mode = resize_mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def transform(self, train: bool = False, **augment) -> Callable[[Image.Image], torch.Tensor]:
        """The preprocessing for this backbone (``augment`` goes to :func:`image_transform`)."""
        return image_transform(
            self.image_size,
            self.mean,
            self.std,
            self.interpolation,
            train=train,
            crop_pct=self.crop_pct,
            resize_mode=self.resize_mode,
            **augment,
        )


def library_resize_mode(mode: str | None, name: str) -> str:
    """timm's ``crop_mode`` / open_clip's ``resize_mode`` as one of :data:`RESIZE_MODES`."""
    if mode == "squash":
        return "squash"
    if mode not in (None, "center", "shortest"):
        log.warning("%s: preprocessing mode %r unsupported; resizing the shorter side", name, mode)
    return "shortest"
