"""``scan_cifar10`` and ``finetune=paper`` against the official SCAN code and the paper.

The official numbers below come from github.com/wvangansbeke/Unsupervised-Classification; each
test names the file. Distributions are checked by statistics over many seeded draws.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import timm
import torch
from helpers import quiet_trainer
from hydra.utils import instantiate
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from ood_nolabels.core.losses import scan_loss
from ood_nolabels.data.augment import (
    MIRRORED_OPS,
    SCAN_OPS,
    Cutout,
    PairedViews,
    ScanAugment,
    scan_strong_transform,
)
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.models.open_clip_backbone import OpenClipBackbone
from ood_nolabels.models.timm_backbone import TimmBackbone
from ood_nolabels.modules.base import StageModule

SIZE = 32

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


def noise_image(size: int = SIZE, seed: int = 0, width: int | None = None) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, width or size, 3), dtype=np.uint8))


def zeroed_fraction(tensor: torch.Tensor) -> float:
    """No uint8 pixel normalises to exactly 0 with CIFAR statistics: every zero is Cutout's."""
    return (tensor == 0).all(dim=0).float().mean().item()


@pytest.fixture
def scan_cifar10(compose_cfg):
    """The ``scan_cifar10`` recipe and its backbone's input statistics."""
    cfg = compose_cfg("+experiment=stage1_cifar10").stage1
    backbone = instantiate(cfg.simclr.backbone)
    stats = dict(image_size=backbone.image_size, mean=backbone.mean, std=backbone.std)
    return cfg, backbone, stats


# -- item 1: the strong augmentation ------------------------------------------------------------


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


# -- item 2: self-label targets from the un-augmented image -------------------------------------


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


# -- item 4 (configuration): one SCAN head ------------------------------------------------------


def test_scan_cifar10_trains_one_head(scan_cifar10):
    """configs/scan/scan_cifar10.yml: ``num_heads: 1``."""
    cfg, _, _ = scan_cifar10
    assert cfg.scan.module.num_heads == 1


# -- item 5: the consistency term ---------------------------------------------------------------


def reproduction() -> tuple[torch.Tensor, torch.Tensor]:
    anchors = torch.tensor([[30.0, 0.0, 0.0], [0.0, 30.0, 0.0]], requires_grad=True)
    neighbors = torch.tensor([[0.0, 30.0, 0.0], [0.0, 30.0, 0.0]], requires_grad=True)
    return anchors, neighbors


def test_underflowed_agreement_costs_and_pulls_as_official():
    """losses/losses.py SCANLoss: ``nn.BCELoss()(similarity, ones)`` (log clamped at -100).

    Row 0's agreement is 2 e^-30 = 1.87e-13: official consistency 14.65 and an L1 gradient of
    0.094 on row 0 of the anchor logits (a clamp of the agreement at 1e-8 gives 9.21 and 0).
    """
    anchors, neighbors = reproduction()
    total, consistency, entropy = scan_loss(anchors, neighbors, entropy_weight=5.0)
    assert consistency.item() == pytest.approx(-math.log(2 * math.exp(-30)) / 2, rel=1e-4)
    assert consistency.item() == pytest.approx(14.6534, abs=1e-3)
    assert total.item() == pytest.approx(consistency.item() - 5.0 * entropy.item(), rel=1e-6)
    consistency.backward()
    assert anchors.grad[0].abs().sum().item() == pytest.approx(0.0936, abs=5e-4)
    assert anchors.grad[1].abs().sum().item() == 0  # agreement 1: nothing to pull
    assert neighbors.grad[0].abs().sum().item() == pytest.approx(0.0936, abs=5e-4)


def test_vanished_agreement_is_capped_at_100_nats():
    """BCE clamps log(0) at -100, so a zero agreement costs 100 (not inf, not -log 1e-8)."""
    anchors = torch.tensor([[100.0, -100.0]], requires_grad=True)
    _, consistency, _ = scan_loss(anchors, -anchors.detach(), entropy_weight=1.0)
    assert consistency.item() == pytest.approx(100.0)
    consistency.backward()
    assert torch.isfinite(anchors.grad).all()


def test_consistency_under_bf16_autocast_matches_float32():
    anchors, neighbors = reproduction()
    expected = scan_loss(anchors, neighbors, 5.0)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = scan_loss(anchors.bfloat16(), neighbors.bfloat16(), 5.0)[1]
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=1e-2)


# -- item 6: the finetuning learning rate -------------------------------------------------------


class LrRecorder(StageModule):
    """A one-layer stage that records the learning rate of every optimizer step."""

    def __init__(self, optimizer, scheduler) -> None:
        super().__init__(optimizer, scheduler)
        self.layer = nn.Linear(2, 1)
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return self.layer(batch).pow(2).mean()


def finetune_lrs(cfg, samples: int, batch_size: int) -> list[float]:
    module = LrRecorder(instantiate(cfg.optimizer), instantiate(cfg.scheduler))
    loader = DataLoader(torch.randn(samples, 2), batch_size=batch_size)
    quiet_trainer(max_epochs=cfg.epochs).fit(module, loader)
    return module.lrs


def test_paper_finetuning_anneals_per_step_from_1e_5_to_1e_6(compose_cfg):
    """The paper: lr 1e-5 -> 1e-6 with a cosine, reached at the last step."""
    cfg = compose_cfg("finetune=paper").finetune
    lrs = finetune_lrs(cfg, samples=22, batch_size=4)  # 6 batches (last partial) x 5 epochs
    assert cfg.epochs == 5 and len(lrs) == 30
    assert lrs[0] == pytest.approx(1e-5, rel=1e-9)
    assert lrs[-1] == pytest.approx(1e-6, rel=1e-9)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))  # a new lr every step
    t = np.arange(30) / 29
    expected = 1e-6 + (1e-5 - 1e-6) * (1 + np.cos(np.pi * t)) / 2
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)


def test_digits_finetuning_keeps_its_per_epoch_cosine(compose_cfg):
    cfg = compose_cfg("finetune=digits").finetune
    lrs = np.array(finetune_lrs(cfg, samples=12, batch_size=4)).reshape(cfg.epochs, 3)
    assert np.all(lrs == lrs[:, :1])  # constant within an epoch
    epochs = np.arange(cfg.epochs)
    expected = 2e-5 + (2e-4 - 2e-5) * (1 + np.cos(np.pi * epochs / cfg.epochs)) / 2
    np.testing.assert_allclose(lrs[:, 0], expected, rtol=1e-6)


# -- item 7: evaluation preprocessing of non-square images --------------------------------------


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


def test_timm_backbone_preprocesses_like_timm():
    """timm's resolved data config: resize to size / crop_pct, centre crop (resnet18: 0.95)."""
    backbone = TimmBackbone("resnet18", pretrained=False)
    config = timm.data.resolve_model_data_config(backbone.model)
    assert backbone.crop_pct == config["crop_pct"] < 1
    reference = timm.data.create_transform(**config, is_training=False)
    image = noise_image(300, width=200)
    torch.testing.assert_close(backbone.transform()(image), reference(image))


def test_open_clip_backbone_preprocesses_like_open_clip():
    backbone = OpenClipBackbone("ViT-B-32", pretrained=None)
    config = PreprocessCfg(**backbone.model.preprocess_cfg)
    reference = image_transform_v2(config, is_train=False)
    image = noise_image(200, width=320)
    torch.testing.assert_close(backbone.transform()(image), reference(image))
