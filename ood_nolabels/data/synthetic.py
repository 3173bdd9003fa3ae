"""A tiny procedurally generated dataset for fast tests: one oriented grating per class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ood_nolabels.data.images import ArrayImages, ImageSource, LabeledImages


class SyntheticSource(ImageSource):
    """``num_classes`` classes of noisy sinusoidal gratings at evenly spaced angles.

    Classes are easy to separate, so end-to-end tests can check that a pipeline does something
    sensible in seconds. Train and test splits use different seeds.
    """

    def __init__(
        self,
        classes: Sequence[int] | None = None,
        num_classes: int = 6,
        per_class: int = 32,
        image_size: int = 16,
        noise: float = 0.15,
        seed: int = 0,
    ) -> None:
        super().__init__(classes)
        self.num_classes = num_classes
        self.per_class = per_class
        self.image_size = image_size
        self.noise = noise
        self.seed = seed

    def _load(self, split: str) -> LabeledImages:
        rng = np.random.default_rng(self.seed + (0 if split == "train" else 1))
        labels = np.repeat(np.arange(self.num_classes), self.per_class)
        angles = labels * np.pi / self.num_classes + rng.normal(0, 0.05, len(labels))
        phases = rng.uniform(0, 2 * np.pi, len(labels))
        grid = np.arange(self.image_size) / self.image_size * 2 * np.pi * 2
        yy, xx = np.meshgrid(grid, grid, indexing="ij")
        waves = np.sin(
            np.cos(angles)[:, None, None] * xx
            + np.sin(angles)[:, None, None] * yy
            + phases[:, None, None]
        )
        waves += rng.normal(0, self.noise, waves.shape)
        pixels = np.clip((waves + 1) * 127.5, 0, 255).astype(np.uint8)
        return ArrayImages(pixels, labels)
