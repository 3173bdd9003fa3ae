"""Augmentation pipelines: shapes, value ranges, randomness, Cutout geometry, picklability."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from functools import partial

import numpy as np
import pytest
import torch
from helpers import conv_backbone, quiet_trainer
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import RandomAffine

from ood_nolabels.data.augment import (
    Cutout,
    PairedViews,
    TwoViews,
    batch_simclr_augment,
    simclr_transform,
    strong_transform,
    weak_transform,
)
from ood_nolabels.models.cifar_resnet import CIFAR10_MEAN, CIFAR10_STD
from ood_nolabels.modules.simclr import SimCLRModule

SIZE = 32
FACTORIES = [simclr_transform, weak_transform, strong_transform]


def image(size: int = SIZE, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


def normalised_bounds() -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(CIFAR10_MEAN)[:, None, None], torch.tensor(CIFAR10_STD)[:, None, None]
    return (0 - mean) / std, (1 - mean) / std


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("mode,size", [("RGB", SIZE), ("L", SIZE), ("RGB", 45)])
def test_output_shape_dtype_and_range(
    factory: Callable[..., Callable], mode: str, size: int
) -> None:
    torch.manual_seed(0)
    out = factory(SIZE, CIFAR10_MEAN, CIFAR10_STD)(image(size, mode))
    low, high = normalised_bounds()
    assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.float32
    assert torch.all(out >= low - 1e-6) and torch.all(out <= high + 1e-6)


@pytest.mark.parametrize("factory", FACTORIES)
def test_two_views_differ(factory: Callable[..., Callable]) -> None:
    torch.manual_seed(0)
    first, second = TwoViews(factory(SIZE, CIFAR10_MEAN, CIFAR10_STD))(image())
    assert first.shape == second.shape and not torch.equal(first, second)


def zero_pixels(tensor: torch.Tensor) -> torch.Tensor:
    return (tensor == 0).all(dim=0)


def assert_single_square(zeros: torch.Tensor, side: int) -> None:
    """The zero pixels are exactly one filled ``side`` x ``side`` square."""
    rows, cols = torch.nonzero(zeros, as_tuple=True)
    assert len(rows) == side * side
    assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side


def test_cutout_zeroes_one_full_square_inside_the_image() -> None:
    torch.manual_seed(0)
    corners = set()
    for _ in range(50):
        out = Cutout(16)(torch.ones(3, SIZE, SIZE))
        assert_single_square(zero_pixels(out), 16)
        assert torch.all(out[:, ~zero_pixels(out)] == 1)
        corners.add(tuple(torch.nonzero(zero_pixels(out))[0].tolist()))
    assert len(corners) > 10  # the hole moves


def test_cutout_does_not_modify_its_input() -> None:
    original = torch.ones(3, 8, 8)
    Cutout(4)(original)
    assert torch.all(original == 1)


def test_strong_transform_cuts_out_the_configured_square() -> None:
    """No uint8 pixel normalises to exactly 0 with CIFAR statistics, so every zero is Cutout's."""
    torch.manual_seed(0)
    for seed in range(10):
        out = strong_transform(SIZE, CIFAR10_MEAN, CIFAR10_STD, cutout_fraction=0.25)(
            image(seed=seed)
        )
        assert_single_square(zero_pixels(out), 8)
    no_cutout = strong_transform(SIZE, CIFAR10_MEAN, CIFAR10_STD, cutout_fraction=0)(image())
    assert not zero_pixels(no_cutout).any()


def test_paired_views_keep_their_order() -> None:
    """(weak, strong): only the second view carries the Cutout hole."""
    views = PairedViews(
        weak_transform(SIZE, CIFAR10_MEAN, CIFAR10_STD),
        strong_transform(SIZE, CIFAR10_MEAN, CIFAR10_STD),
    )
    weak, strong = views(image())
    assert not zero_pixels(weak).any()
    assert_single_square(zero_pixels(strong), 16)


def test_transforms_pickle_and_still_work_after_unpickling() -> None:
    weak = weak_transform(SIZE, CIFAR10_MEAN, CIFAR10_STD)
    strong = strong_transform(SIZE, CIFAR10_MEAN, CIFAR10_STD)
    for views in (
        TwoViews(simclr_transform(SIZE, CIFAR10_MEAN, CIFAR10_STD)),
        PairedViews(weak, strong),
    ):
        first, second = pickle.loads(pickle.dumps(views))(image(mode="L"))
        assert first.shape == second.shape == (3, SIZE, SIZE)


def random_affines(transform) -> list:
    return [t for t in transform.transforms if isinstance(t, RandomAffine)]


@pytest.mark.parametrize("factory", [simclr_transform, strong_transform])
def test_affine_option_is_off_by_default_and_configurable(factory: Callable[..., Callable]) -> None:
    assert not random_affines(factory(SIZE, CIFAR10_MEAN, CIFAR10_STD))
    # Hydra passes lists; they become the tuples RandomAffine expects.
    transform = factory(
        SIZE,
        CIFAR10_MEAN,
        CIFAR10_STD,
        affine_degrees=10,
        affine_translate=[0.1, 0.1],
        affine_scale=[0.9, 1.1],
    )
    (affine,) = random_affines(transform)
    assert affine.degrees == [-10.0, 10.0]
    assert affine.translate == (0.1, 0.1) and affine.scale == (0.9, 1.1)
    torch.manual_seed(0)
    out = transform(image(mode="L"))
    low, high = normalised_bounds()
    assert out.shape == (3, SIZE, SIZE)
    assert torch.all(out >= low - 1e-6) and torch.all(out <= high + 1e-6)
    assert pickle.loads(pickle.dumps(transform))(image()).shape == (3, SIZE, SIZE)


def test_simclr_affine_moves_the_image() -> None:
    """With crops, jitter and flips off, only the affine warp changes the view."""
    kwargs = dict(crop_scale=(1.0, 1.0), jitter_p=0.0, grayscale_p=0.0, hflip=False)
    plain = simclr_transform(SIZE, CIFAR10_MEAN, CIFAR10_STD, **kwargs)
    warped = simclr_transform(
        SIZE, CIFAR10_MEAN, CIFAR10_STD, affine_degrees=10, affine_translate=(0.2, 0.2), **kwargs
    )
    torch.manual_seed(0)
    assert torch.equal(plain(image()), plain(image()))
    views = [warped(image()) for _ in range(5)]
    assert not any(torch.equal(view, plain(image())) for view in views)


# -- SimCLR views batched on the device (kornia) -------------------------------------------------


def uint8_batch(n: int = 6, size: int = SIZE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


def test_batch_simclr_views_are_normalised_and_drawn_per_image():
    augment = batch_simclr_augment(SIZE, CIFAR10_MEAN, CIFAR10_STD)
    same = uint8_batch(1).expand(8, -1, -1, -1)  # one image eight times
    views = augment(same)
    low, high = normalised_bounds()
    assert views.shape == (8, 3, SIZE, SIZE) and views.dtype == torch.float32
    assert (views >= low - 1e-5).all() and (views <= high + 1e-5).all()
    flat = views.flatten(1)
    assert len({tuple(row.tolist()) for row in flat}) == 8  # every image its own random draw


def test_batch_simclr_with_nothing_random_is_the_normalised_image():
    augment = batch_simclr_augment(
        SIZE,
        CIFAR10_MEAN,
        CIFAR10_STD,
        crop_scale=(1.0, 1.0),
        jitter_p=0.0,
        grayscale_p=0.0,
        hflip=False,
    )
    images = uint8_batch()
    augment.pipeline[0] = torch.nn.Identity()  # RandomResizedCrop at scale 1 still jitters ratio
    expected = torch.stack(
        [T.Normalize(CIFAR10_MEAN, CIFAR10_STD)(x.float() / 255) for x in images]
    )
    torch.testing.assert_close(augment(images), expected)


def test_batch_simclr_refuses_float_images():
    with pytest.raises(ValueError, match="uint8"):
        batch_simclr_augment(SIZE, CIFAR10_MEAN, CIFAR10_STD)(torch.rand(2, 3, SIZE, SIZE))


def test_simclr_stage_trains_with_views_drawn_after_the_transfer():
    """The loader yields uint8 images; the module draws both views on the batch's device."""
    torch.manual_seed(0)
    backbone = conv_backbone(image_size=SIZE)
    augment = batch_simclr_augment(SIZE, (0.5,) * 3, (0.5,) * 3)
    module = SimCLRModule(
        backbone,
        partial(torch.optim.SGD, lr=0.1),
        hidden_dim=8,
        projection_dim=4,
        batch_augment=augment,
    )
    images = [image(seed=i) for i in range(8)]
    dataset = [(augment.loader_transform()(x), i) for i, x in enumerate(images)]
    before = [p.clone() for p in backbone.parameters()]
    quiet_trainer(max_epochs=1).fit(module, torch.utils.data.DataLoader(dataset, batch_size=8))
    assert any(not torch.equal(a, b) for a, b in zip(before, backbone.parameters(), strict=True))
    assert not any(k.startswith("batch_augment") for k in module.state_dict())
