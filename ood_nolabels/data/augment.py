"""Augmentations of the pseudo-labelling pipeline: SimCLR views, SCAN weak and strong views.

Everything here is a module-level class or function returning torchvision ``Compose`` objects,
so transforms pickle into DataLoader workers and DDP-spawned processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision import transforms as T

from ood_nolabels.models.backbones import to_rgb

Transform = Callable[[Image.Image], torch.Tensor]


class Cutout:
    """Zero one random ``size`` x ``size`` square of a normalised ``(C, H, W)`` tensor.

    Zero after normalisation is the dataset-mean colour, as in SCAN's Cutout. Unlike the official
    code (which centres the hole anywhere and clips it at the border), the square is always fully
    inside the image, so every strong view loses exactly ``size**2`` pixels.
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"cutout size must be >= 0, got {size}")
        self.size = int(size)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        if self.size == 0:
            return image
        if self.size > min(height, width):
            raise ValueError(f"cutout size {self.size} exceeds image size {height}x{width}")
        top = int(torch.randint(height - self.size + 1, ()))
        left = int(torch.randint(width - self.size + 1, ()))
        image = image.clone()
        image[..., top : top + self.size, left : left + self.size] = 0
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class PairedViews:
    """Two views of one image, e.g. (weak, strong) for self-labelling."""

    def __init__(self, first: Transform, second: Transform) -> None:
        self.first = first
        self.second = second

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.first(image), self.second(image)


class TwoViews(PairedViews):
    """Two independent draws of the same random transform (SimCLR's positive pair)."""

    def __init__(self, transform: Transform) -> None:
        super().__init__(transform, transform)


def _flip(hflip: bool) -> list[Callable]:
    return [T.RandomHorizontalFlip()] if hflip else []


def _affine(
    degrees: float, translate: tuple[float, float] | None, scale: tuple[float, float] | None
) -> list[Callable]:
    """A small random affine warp (e.g. for digits, where crops alone move strokes little)."""
    if degrees == 0 and translate is None and scale is None:
        return []
    return [
        T.RandomAffine(
            degrees,
            translate=None if translate is None else tuple(translate),
            scale=None if scale is None else tuple(scale),
        )
    ]


def _to_normalised_tensor(mean: Sequence[float], std: Sequence[float]) -> list[Callable]:
    return [T.ToTensor(), T.Normalize(mean, std)]


def _padded_crop(image_size: int, crop_padding_fraction: float) -> list[Callable]:
    """Resize to ``image_size`` (a no-op for CIFAR), then random-crop with zero padding."""
    padding = round(crop_padding_fraction * image_size)
    return [T.Resize((image_size, image_size)), T.RandomCrop(image_size, padding=padding)]


def simclr_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_scale: tuple[float, float] = (0.2, 1.0),
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    hflip: bool = True,
    affine_degrees: float = 0.0,
    affine_translate: tuple[float, float] | None = None,
    affine_scale: tuple[float, float] | None = None,
) -> T.Compose:
    """SimCLR's CIFAR augmentation (as in SCAN's pretext config); wrap in :class:`TwoViews`.

    The ``affine_*`` options (off by default, as official) add a :class:`T.RandomAffine` after
    the crop: rotation in ``[-affine_degrees, affine_degrees]``, translation fractions, scale range.
    """
    return T.Compose(
        [
            to_rgb,
            T.RandomResizedCrop(image_size, scale=crop_scale),
            *_affine(affine_degrees, affine_translate, affine_scale),
            *_flip(hflip),
            T.RandomApply([T.ColorJitter(*jitter)], p=jitter_p),
            T.RandomGrayscale(p=grayscale_p),
            *_to_normalised_tensor(mean, std),
        ]
    )


def weak_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    hflip: bool = True,
    crop_padding_fraction: float = 0.125,
) -> T.Compose:
    """Weak view (crop + flip + normalise): the self-labelling targets come from it.

    The official SCAN self-labelling takes targets from the un-augmented view; pass
    ``hflip=False, crop_padding_fraction=0`` for exactly that.
    """
    return T.Compose(
        [
            to_rgb,
            *_padded_crop(image_size, crop_padding_fraction),
            *_flip(hflip),
            *_to_normalised_tensor(mean, std),
        ]
    )


def strong_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    num_ops: int = 4,
    magnitude: int = 15,
    cutout_fraction: float = 0.5,
    hflip: bool = True,
    crop_padding_fraction: float = 0.125,
    affine_degrees: float = 0.0,
    affine_translate: tuple[float, float] | None = None,
    affine_scale: tuple[float, float] | None = None,
) -> T.Compose:
    """SCAN's strong view: crop, flip, RandAugment (``num_ops`` ops), normalise, Cutout.

    SCAN draws each op's strength uniformly over its whole range; torchvision's ``RandAugment``
    uses one fixed ``magnitude`` out of 31 bins, so the default 15 is the middle of the range,
    i.e. SCAN's average strength. The Cutout side is ``round(cutout_fraction * image_size)``
    (16 px for CIFAR, as official). The ``affine_*`` options (off by default) add a
    :class:`T.RandomAffine` after the crop, as in :func:`simclr_transform`.
    """
    return T.Compose(
        [
            to_rgb,
            *_padded_crop(image_size, crop_padding_fraction),
            *_affine(affine_degrees, affine_translate, affine_scale),
            *_flip(hflip),
            T.RandAugment(num_ops=num_ops, magnitude=magnitude),
            *_to_normalised_tensor(mean, std),
            Cutout(round(cutout_fraction * image_size)),
        ]
    )
