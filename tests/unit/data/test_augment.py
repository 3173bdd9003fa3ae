"""Augmentation pipelines: shapes, value ranges, randomness, Cutout geometry, picklability;
SCAN's strong augmentation against the official code.

The official numbers come from github.com/wvangansbeke/Unsupervised-Classification; each
test names the file. Distributions are checked by statistics over many seeded draws.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

import numpy as np
import pytest
import torch
from helpers import image, noise_image
from hydra.utils import instantiate
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import RandomAffine

from ood_nolabels.data.augment import (
    MIRRORED_OPS,
    SCAN_OPS,
    Cutout,
    PairedViews,
    ScanAugment,
    TwoViews,
    batch_simclr_augment,
    scan_strong_transform,
    simclr_transform,
    strong_transform,
    weak_transform,
)
from ood_nolabels.models.cifar_resnet import CIFAR10_MEAN, CIFAR10_STD

SIZE = 32
FACTORIES = [simclr_transform, weak_transform, strong_transform]


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


# -- SCAN's strong augmentation (official data/augment.py) ---------------------------------------


# data/augment.py, augment_list(): op -> (low, high) of the uniformly drawn magnitude.
OFFICIAL_RANGES = {
    "identity": (0, 1),
    "autocontrast": (0, 1),
    "equalize": (0, 1),
    "rotate": (-30, 30),
    "solarize": (0, 256),
    "color": (0.05, 0.95),
    "contrast": (0.05, 0.95),
    "brightness": (0.05, 0.95),
    "sharpness": (0.05, 0.95),
    "shear_x": (-0.1, 0.1),
    "translate_x": (-0.1, 0.1),
    "translate_y": (-0.1, 0.1),
    "posterize": (4, 8),
    "shear_y": (-0.1, 0.1),
}
# data/augment.py, Cutout(length=16, random=True) on a 32 px image: the mean zeroed fraction,
# (1/16) sum_L E[rows]^2 / 32^2 with rows = min(y + L//2, 32) - max(y - L//2, 0), y in 0..31.
OFFICIAL_CUTOUT_FRACTION = 0.0689


def zeroed_fraction(tensor: torch.Tensor) -> float:
    """No uint8 pixel normalises to exactly 0 with CIFAR statistics: every zero is Cutout's."""
    return (tensor == 0).all(dim=0).float().mean().item()


def test_ops_are_drawn_uniformly_with_a_magnitude_uniform_in_each_ops_own_range():
    """data/augment.py: ``random.choices`` of the 14 ops, magnitude uniform in [low, high]."""
    assert {name: (low, high) for name, (_, low, high) in SCAN_OPS.items()} == OFFICIAL_RANGES
    torch.manual_seed(0)
    draws: dict[str, list[float]] = {name: [] for name in OFFICIAL_RANGES}
    calls = 5000
    for _ in range(calls):
        sample = ScanAugment(num_ops=4).sample()
        assert len(sample) == 4
        for name, magnitude in sample:
            draws[name].append(magnitude)
    for name, (low, high) in OFFICIAL_RANGES.items():
        values = np.array(draws[name])
        assert len(values) / (4 * calls) == pytest.approx(1 / 14, abs=0.01), name
        if name in MIRRORED_OPS:  # symmetric range, mirrored at random: |m| uniform in [0, high]
            values = np.abs(values)
            low = 0
            assert np.mean(np.array(draws[name]) < 0) == pytest.approx(0.5, abs=0.05), name
        span = high - low
        assert values.min() >= low and values.max() <= high, name
        assert values.min() < low + 0.02 * span and values.max() > high - 0.02 * span, name
        assert values.mean() == pytest.approx((low + high) / 2, abs=0.03 * span), name
        assert values.std() == pytest.approx(span / math.sqrt(12), abs=0.03 * span), name


def test_ops_repeat_within_a_call():
    """Drawn with replacement (``random.choices``), not 4 distinct ops."""
    torch.manual_seed(0)
    repeats = [len({name for name, _ in ScanAugment(4).sample()}) < 4 for _ in range(2000)]
    # P(4 distinct of 14) = 14 * 13 * 12 * 11 / 14^4 = 0.6254
    assert 1 - np.mean(repeats) == pytest.approx(0.6254, abs=0.03)


def marker_column(size: int) -> Image.Image:
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[:, size // 2] = 255
    return Image.fromarray(pixels)


@pytest.mark.parametrize("size", [32, 64])
def test_translate_moves_up_to_a_tenth_of_the_image_side(size):
    """data/augment.py: TranslateX by ``v * img.size[0]``, v in [-0.1, 0.1], mirrored."""
    torch.manual_seed(0)
    translate = ScanAugment(num_ops=1, ops=["translate_x"])
    shifts = []
    for _ in range(600):
        columns = np.nonzero(np.asarray(translate(marker_column(size)))[0, :, 0])[0]
        shifts.append(int(columns[0]) - size // 2 if len(columns) else None)
    assert None not in shifts
    reach = round(0.1 * size)  # nearest-neighbour shift of at most 0.1 * side pixels
    assert set(shifts) == set(range(-reach, reach + 1))
    mean_reach = np.mean(np.abs(shifts)) / (0.1 * size)  # |v| uniform: half the maximum
    assert mean_reach == pytest.approx(0.5, abs=0.08)


def test_enhance_factors_weaken_between_0_05_and_0_95():
    """data/augment.py: Brightness(v), v in [0.05, 0.95] (not 1 +- a fixed step)."""
    torch.manual_seed(0)
    brightness = ScanAugment(num_ops=1, ops=["brightness"])
    gray = Image.new("RGB", (8, 8), (200, 200, 200))
    factors = np.array([np.asarray(brightness(gray))[0, 0, 0] / 200 for _ in range(1000)])
    assert factors.min() >= 0.04 and factors.max() <= 0.96
    assert factors.min() < 0.08 and factors.max() > 0.92
    assert factors.mean() == pytest.approx(0.5, abs=0.03)
    assert factors.std() == pytest.approx(0.9 / math.sqrt(12), abs=0.02)


def test_random_cutout_matches_the_official_hole_distribution():
    """data/augment.py Cutout(1, 16, random=True): length 1..16, centre anywhere, clipped."""
    torch.manual_seed(0)
    cutout = Cutout(16, random_size=True)
    fractions, sides, empty, clipped = [], set(), 0, 0
    for _ in range(4000):
        zeros = (cutout(torch.ones(3, SIZE, SIZE)) == 0).all(dim=0)
        fractions.append(zeros.float().mean().item())
        rows, cols = torch.nonzero(zeros, as_tuple=True)
        if len(rows) == 0:
            empty += 1
            continue
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert len(rows) == height * width  # one filled rectangle
        if 0 < rows.min() and rows.max() < SIZE - 1 and 0 < cols.min() and cols.max() < SIZE - 1:
            assert height == width  # inside the image: a square of side 2 * (L // 2)
            sides.add(height)
        else:
            clipped += 1
    assert np.mean(fractions) == pytest.approx(OFFICIAL_CUTOUT_FRACTION, abs=0.004)
    assert max(fractions) <= 16 * 16 / SIZE**2
    assert sides == {2, 4, 6, 8, 10, 12, 14, 16}
    assert empty / 4000 == pytest.approx(1 / 16, abs=0.015)  # L = 1 cuts nothing
    assert clipped > 400  # holes reach over the border


def test_fixed_cutout_is_unchanged_by_default():
    """The digits and synthetic recipes keep the in-image square of fixed side."""
    torch.manual_seed(0)
    fractions = [zeroed_fraction(Cutout(16)(torch.ones(3, SIZE, SIZE))) for _ in range(100)]
    assert set(fractions) == {0.25}


@pytest.mark.parametrize("stage", ["scan", "selflabel"])
def test_recipe_strong_view_zeroes_6_9_percent_on_average(scan_cifar10, stage):
    """configs/{scan,selflabel}/*_cifar10.yml: 4 strong augs, Cutout length 16, random."""
    cfg, _, stats = scan_cifar10
    augment = cfg.scan.augment if stage == "scan" else cfg.selflabel.strong_augment
    transform = instantiate(augment)(**stats)
    torch.manual_seed(0)
    fractions = [zeroed_fraction(transform(noise_image(seed=i % 20))) for i in range(1500)]
    assert np.mean(fractions) == pytest.approx(OFFICIAL_CUTOUT_FRACTION, abs=0.008)
    ops = [t for t in transform.transforms if isinstance(t, ScanAugment)]
    assert len(ops) == 1 and ops[0].num_ops == 4


def test_recipe_strong_view_has_no_padded_crop(scan_cifar10):
    """utils/common_config.py 'ours': flip, RandomCrop(32) of a 32 px image (no padding)."""
    cfg, _, stats = scan_cifar10
    geometry_only = instantiate(cfg.scan.augment)(**stats, num_ops=0, cutout_fraction=0)
    image = noise_image()
    plain = T.Compose([T.ToTensor(), T.Normalize(stats["mean"], stats["std"])])(image)
    torch.manual_seed(0)
    views = [geometry_only(image) for _ in range(40)]
    flipped = [torch.equal(view, plain.flip(-1)) for view in views]
    assert all(torch.equal(view, plain) or f for view, f in zip(views, flipped, strict=True))
    assert 5 < sum(flipped) < 35  # flipped half the time, never shifted


@pytest.mark.parametrize("mode,size", [("RGB", SIZE), ("L", SIZE), ("RGB", 45)])
def test_scan_strong_transform_shape_range_and_pickling(mode, size):
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    transform = pickle.loads(pickle.dumps(scan_strong_transform(SIZE, mean, std)))
    image = noise_image(size).convert(mode)
    torch.manual_seed(0)
    low = (0 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    high = (1 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    for _ in range(20):
        out = transform(image)
        assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.float32
        assert torch.all(out >= low - 1e-6) and torch.all(out <= high + 1e-6)


def test_imagenet_strong_view_crops_224_of_256_and_cuts_up_to_75_px():
    """'ours' at crop_size 224 of the official ImageNet dataset: Resize(256), flip, RandomCrop(224),
    4 ops, normalise, Cutout(n_holes=1, length=75, random=True)."""
    transform = scan_strong_transform(224, (0.5,) * 3, (0.5,) * 3, cutout_length=75, resize=256)
    steps = {type(step).__name__: step for step in transform.transforms}
    assert steps["Resize"].size == 256 and steps["RandomCrop"].size == (224, 224)
    assert steps["ScanAugment"].num_ops == 4
    cutout = transform.transforms[-1]
    assert isinstance(cutout, Cutout) and (cutout.size, cutout.random_size) == (75, True)
    image = Image.fromarray(np.full((300, 400, 3), 200, dtype=np.uint8))
    assert transform(image).shape == (3, 224, 224)
    default = scan_strong_transform(32, (0.5,) * 3, (0.5,) * 3)  # CIFAR: unchanged, 16 px
    assert default.transforms[-1].size == 16


# -- self-label targets from the un-augmented image ---------------------------------------------


def test_selflabel_targets_come_from_the_unaugmented_image(scan_cifar10):
    """selflabel.py: ``{'standard': val_transforms, 'augment': strong_transforms}``."""
    cfg, backbone, stats = scan_cifar10
    views = PairedViews(
        instantiate(cfg.selflabel.weak_augment)(**stats),
        instantiate(cfg.selflabel.strong_augment)(**stats),
    )
    evaluation = backbone.transform()
    torch.manual_seed(0)
    for seed in range(20):
        image = noise_image(seed=seed)
        weak, strong = views(image)
        assert torch.equal(weak, evaluation(image))
        assert not torch.equal(strong, evaluation(image))
