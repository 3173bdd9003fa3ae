"""Augmentations of the pseudo-labelling pipeline: SimCLR views, SCAN weak and strong views.

Everything here is a module-level class or function returning torchvision ``Compose`` objects,
so transforms pickle into DataLoader workers and DDP-spawned processes. Random draws use torch's
generator, so ``seed_everything`` and the DataLoader's per-worker seeds govern them.

Two strong views: :func:`scan_strong_transform` is the official SCAN "ours" strategy (the
``scan_cifar10`` recipe); :func:`strong_transform` is torchvision's RandAugment at a fixed
magnitude after a padded crop (the digits and synthetic recipes).

SimCLR's views can also be drawn on the accelerator: :func:`batch_simclr_augment` (kornia, one
random draw per image) replaces :func:`simclr_transform` in the config, and the loader then only
decodes and resizes (:func:`uint8_tensor`), so PIL no longer limits a fast GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import kornia.augmentation as K
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch import nn
from torchvision import transforms as T

from ood_nolabels.data.images import to_rgb

Transform = Callable[[Image.Image], torch.Tensor]


class Cutout:
    """Zero one square hole of a normalised ``(C, H, W)`` tensor (zero = the dataset-mean colour).

    ``random_size=False``: a ``size`` x ``size`` square always fully inside the image, so every
    view loses exactly ``size**2`` pixels (the digits and synthetic recipes).

    ``random_size=True``: official SCAN's ``Cutout(n_holes=1, length=size, random=True)``. A
    length ``L`` is drawn uniformly from ``1..size`` and a centre ``(y, x)`` uniformly over all
    pixels; rows ``[y - L//2, y + L//2)`` and the same columns are zeroed, clipped at the border
    (so the side is ``2 * (L // 2)``: ``L = 1`` cuts nothing). On 32 px with ``size=16`` that
    zeroes 6.9 % of the image on average.
    """

    def __init__(self, size: int, random_size: bool = False) -> None:
        if size < 0:
            raise ValueError(f"cutout size must be >= 0, got {size}")
        self.size = int(size)
        self.random_size = bool(random_size)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        if self.size == 0:
            return image
        if self.random_size:
            return self._clipped_hole(image, height, width)
        if self.size > min(height, width):
            raise ValueError(f"cutout size {self.size} exceeds image size {height}x{width}")
        top = int(torch.randint(height - self.size + 1, ()))
        left = int(torch.randint(width - self.size + 1, ()))
        image = image.clone()
        image[..., top : top + self.size, left : left + self.size] = 0
        return image

    def _clipped_hole(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        half = int(torch.randint(1, self.size + 1, ())) // 2
        y, x = int(torch.randint(height, ())), int(torch.randint(width, ()))
        image = image.clone()
        image[..., max(y - half, 0) : y + half, max(x - half, 0) : x + half] = 0
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, random_size={self.random_size})"


# -- SCAN's strong augmentation ---------------------------------------------------------------
# Each op maps (PIL image, magnitude) -> PIL image. Geometric ops use PIL's defaults as SCAN does:
# nearest-neighbour resampling, black fill.


def _identity(image: Image.Image, _: float) -> Image.Image:
    return image


def _autocontrast(image: Image.Image, _: float) -> Image.Image:
    return ImageOps.autocontrast(image)


def _equalize(image: Image.Image, _: float) -> Image.Image:
    return ImageOps.equalize(image)


def _rotate(image: Image.Image, degrees: float) -> Image.Image:
    return image.rotate(degrees)


def _solarize(image: Image.Image, threshold: float) -> Image.Image:
    return ImageOps.solarize(image, threshold)


def _posterize(image: Image.Image, bits: float) -> Image.Image:
    return ImageOps.posterize(image, int(bits))


def _pil_affine(image: Image.Image, coefficients: tuple[float, ...]) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, coefficients)


def _shear_x(image: Image.Image, shear: float) -> Image.Image:
    return _pil_affine(image, (1, shear, 0, 0, 1, 0))


def _shear_y(image: Image.Image, shear: float) -> Image.Image:
    return _pil_affine(image, (1, 0, 0, shear, 1, 0))


def _translate_x(image: Image.Image, fraction: float) -> Image.Image:
    """Shift by ``fraction`` of the width (in pixels: ``fraction * width``)."""
    return _pil_affine(image, (1, 0, fraction * image.width, 0, 1, 0))


def _translate_y(image: Image.Image, fraction: float) -> Image.Image:
    return _pil_affine(image, (1, 0, 0, 0, 1, fraction * image.height))


def _color(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Color(image).enhance(factor)


def _contrast(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(factor)


def _brightness(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


def _sharpness(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Sharpness(image).enhance(factor)


# SCAN's 14 ops with the range each op's magnitude is drawn from (official data/augment.py).
SCAN_OPS: dict[str, tuple[Callable[[Image.Image, float], Image.Image], float, float]] = {
    "identity": (_identity, 0.0, 1.0),
    "autocontrast": (_autocontrast, 0.0, 1.0),
    "equalize": (_equalize, 0.0, 1.0),
    "rotate": (_rotate, -30.0, 30.0),  # degrees
    "solarize": (_solarize, 0.0, 256.0),  # threshold
    "color": (_color, 0.05, 0.95),  # enhance factors (1 = unchanged): always weaker
    "contrast": (_contrast, 0.05, 0.95),
    "brightness": (_brightness, 0.05, 0.95),
    "sharpness": (_sharpness, 0.05, 0.95),
    "shear_x": (_shear_x, -0.1, 0.1),
    "translate_x": (_translate_x, -0.1, 0.1),  # fraction of the image side
    "translate_y": (_translate_y, -0.1, 0.1),
    "posterize": (_posterize, 4.0, 8.0),  # bits kept
    "shear_y": (_shear_y, -0.1, 0.1),
}
# The ops whose magnitude SCAN negates with probability 1/2.
MIRRORED_OPS = frozenset({"rotate", "shear_x", "shear_y", "translate_x", "translate_y"})


class ScanAugment:
    """SCAN's strong colour/geometry ops: ``num_ops`` ops drawn with replacement, applied in turn.

    Every op gets a fresh magnitude drawn uniformly from its own range in :data:`SCAN_OPS` (no
    global magnitude as in RandAugment), negated with probability 1/2 for the ops in
    :data:`MIRRORED_OPS`. ``ops`` restricts the draw to a subset of op names (for tests).
    """

    def __init__(self, num_ops: int = 4, ops: Sequence[str] | None = None) -> None:
        if num_ops < 0:
            raise ValueError(f"num_ops must be >= 0, got {num_ops}")
        self.num_ops = int(num_ops)
        self.ops = tuple(SCAN_OPS) if ops is None else tuple(ops)
        unknown = set(self.ops) - set(SCAN_OPS)
        if unknown or not self.ops:
            raise ValueError(f"unknown or no ops {sorted(unknown)}; choose from {list(SCAN_OPS)}")

    def sample(self) -> list[tuple[str, float]]:
        """One call's ops and magnitudes, in the order they are applied."""
        draws = []
        for index in torch.randint(len(self.ops), (self.num_ops,)).tolist():
            name = self.ops[index]
            _, low, high = SCAN_OPS[name]
            magnitude = low + (high - low) * float(torch.rand(()))
            if name in MIRRORED_OPS and bool(torch.rand(()) < 0.5):
                magnitude = -magnitude
            draws.append((name, magnitude))
        return draws

    def __call__(self, image: Image.Image) -> Image.Image:
        for name, magnitude in self.sample():
            image = SCAN_OPS[name][0](image, magnitude)
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_ops={self.num_ops}, ops={list(self.ops)})"


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
    """A RandAugment strong view: padded crop, flip, RandAugment, normalise, in-image Cutout.

    The digits and synthetic recipes' approximation of SCAN's view (the official one is
    :func:`scan_strong_transform`): torchvision's ``RandAugment`` applies every op at one fixed
    ``magnitude`` out of 31 bins (e.g. enhance factors 1 +- 0.45 at 15, where SCAN draws 0.05 to
    0.95), and the Cutout square of side ``round(cutout_fraction * image_size)`` always lies
    fully inside the image. The ``affine_*`` options (off by default) add a
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


def scan_strong_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    num_ops: int = 4,
    cutout_fraction: float = 0.5,
    hflip: bool = True,
    cutout_length: int | None = None,
    resize: int | None = None,
) -> T.Compose:
    """Official SCAN strong view ("ours"): flip, :class:`ScanAugment`, normalise, random Cutout.

    No padded crop: SCAN's ``RandomCrop(32)`` of a 32 px CIFAR image is the identity (the resize
    to ``image_size`` is one too). Cutout draws its length from ``1..round(cutout_fraction *
    image_size)`` (16 px for CIFAR, as official), or ``1..cutout_length`` when given (75 px in
    SCAN's ImageNet recipe), and clips the hole at the border. ``resize`` (SCAN's ImageNet
    recipe: 256) resizes the shorter side first and then crops a random ``image_size`` square,
    as the official ImageNet dataset's ``Resize(256)`` followed by ``RandomCrop(224)``. The
    official CIFAR values are the defaults.
    """
    if resize is None:
        geometry = [T.Resize((image_size, image_size))]
    else:
        geometry = [T.Resize(resize), T.RandomCrop(image_size)]
    length = round(cutout_fraction * image_size) if cutout_length is None else cutout_length
    return T.Compose(
        [
            to_rgb,
            *geometry,
            *_flip(hflip),
            ScanAugment(num_ops),
            *_to_normalised_tensor(mean, std),
            Cutout(length, random_size=True),
        ]
    )


# -- SimCLR views batched on the accelerator ----------------------------------------------------


def uint8_tensor(image_size: int) -> T.Compose:
    """Decode and resize only: ``(3, image_size, image_size)`` uint8 tensors (4x fewer bytes to
    copy to the device than floats) for an augmentation that runs on the batch."""
    return T.Compose([to_rgb, T.Resize((image_size, image_size)), T.PILToTensor()])


class BatchAugment(nn.Module):
    """A batched augmentation: uint8 ``(B, 3, H, W)`` images on any device -> normalised views.

    ``pipeline`` draws its random parameters per image (kornia). :meth:`views` gives SimCLR's two
    independent views of every image.
    """

    def __init__(self, image_size: int, pipeline: nn.Module) -> None:
        super().__init__()
        self.image_size = image_size
        self.pipeline = pipeline

    def loader_transform(self) -> T.Compose:
        """What the data loader does per image before this augmentation (decode, resize)."""
        return uint8_tensor(self.image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"expected uint8 (B, 3, H, W) images, got {images.dtype} {tuple(images.shape)}"
            )
        return self.pipeline(images.float() / 255.0)

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(images), self(images)


def batch_simclr_augment(
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
) -> BatchAugment:
    """:func:`simclr_transform`'s augmentation on whole batches on their device (kornia).

    Same arguments and the same ops in the same order, with a random draw per image. Two
    differences: the crop is taken from the image already resized to ``image_size`` (identical
    for CIFAR's 32 px at 32 px), and kornia's bilinear resampling and colour ops differ from
    PIL's in rounding, so the random streams, not the distributions, differ from the CPU path.
    """
    affine = []
    if affine_degrees != 0 or affine_translate is not None or affine_scale is not None:
        affine = [
            K.RandomAffine(
                affine_degrees,
                translate=None if affine_translate is None else tuple(affine_translate),
                scale=None if affine_scale is None else tuple(affine_scale),
                p=1.0,
            )
        ]
    pipeline = nn.Sequential(
        K.RandomResizedCrop((image_size, image_size), scale=tuple(crop_scale)),
        *affine,
        *([K.RandomHorizontalFlip()] if hflip else []),
        K.ColorJitter(*jitter, p=jitter_p),
        K.RandomGrayscale(p=grayscale_p),
        K.Normalize(torch.tensor(mean), torch.tensor(std)),
    )
    return BatchAugment(image_size, pipeline)
