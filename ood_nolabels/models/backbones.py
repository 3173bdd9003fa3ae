"""Pretrained feature extractors with their own preprocessing.

A :class:`Backbone` maps a batch of images to ``(N, feature_dim)`` features and knows how its
inputs must be prepared (size, normalisation), so datasets never hard-code a model's statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import open_clip
import timm
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from ood_nolabels.models.hub import load_pretrained


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale (digits, some folder images) to the 3 channels every pretrained model expects."""
    return image.convert("RGB")


def image_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
    train: bool = False,
    crop_scale: tuple[float, float] = (0.6, 1.0),
    hflip: bool = True,
) -> Callable[[Image.Image], torch.Tensor]:
    """Resize to a square ``image_size`` (random resized crop when ``train``) and normalise."""
    mode = T.InterpolationMode(interpolation)
    if train:
        geometry = [T.RandomResizedCrop(image_size, scale=crop_scale, interpolation=mode)]
        geometry += [T.RandomHorizontalFlip()] if hflip else []
    else:
        geometry = [T.Resize((image_size, image_size), interpolation=mode)]
    return T.Compose([to_rgb, *geometry, T.ToTensor(), T.Normalize(mean, std)])


class Backbone(nn.Module):
    """Base class: ``forward(images) -> features`` plus the preprocessing the weights expect."""

    def __init__(
        self,
        model: nn.Module,
        feature_dim: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bicubic",
    ) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = int(feature_dim)
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def transform(self, train: bool = False, **augment) -> Callable[[Image.Image], torch.Tensor]:
        """The preprocessing for this backbone (``augment`` goes to :func:`image_transform`)."""
        return image_transform(
            self.image_size, self.mean, self.std, self.interpolation, train=train, **augment
        )


class TimmBackbone(Backbone):
    """Any timm model by name, without its classifier.

    ``pretrained=True`` loads the hub weights (or the local file ``checkpoint_path``);
    ``image_size`` overrides the model's default input size (e.g. 64 px for tiny images).
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = True,
        checkpoint_path: str | None = None,
        image_size: int | None = None,
        **model_kwargs,
    ) -> None:
        def create() -> nn.Module:
            overlay = {"file": str(Path(checkpoint_path).expanduser())} if checkpoint_path else None
            return timm.create_model(
                name,
                pretrained=pretrained or bool(checkpoint_path),
                pretrained_cfg_overlay=overlay,
                num_classes=0,
                **model_kwargs,
            )

        if checkpoint_path and not Path(checkpoint_path).expanduser().is_file():
            raise FileNotFoundError(f"backbone.checkpoint_path {checkpoint_path} does not exist")
        if pretrained and not checkpoint_path:
            model = load_pretrained(f"timm model {name!r}", create)
        else:
            model = create()
        config = timm.data.resolve_model_data_config(model)
        super().__init__(
            model,
            feature_dim=model.num_features,
            image_size=image_size or config["input_size"][-1],
            mean=config["mean"],
            std=config["std"],
            interpolation=config.get("interpolation", "bicubic"),
        )


class OpenClipBackbone(Backbone):
    """The visual tower of an open_clip model; ``pretrained`` is a tag or a local weights file."""

    def __init__(self, name: str, pretrained: str | None = "openai", image_size: int | None = None):
        def create() -> nn.Module:
            return open_clip.create_model(name, pretrained=pretrained)

        model = (
            load_pretrained(f"open_clip {name}/{pretrained}", create) if pretrained else create()
        )
        visual = model.visual
        config = visual.preprocess_cfg
        size = config["size"]
        super().__init__(
            visual,
            feature_dim=visual.output_dim,
            image_size=image_size or (size if isinstance(size, int) else size[-1]),
            mean=config["mean"],
            std=config["std"],
            interpolation=config.get("interpolation", "bicubic"),
        )
