"""The embedded offline benchmark: scikit-learn's bundled 8x8 handwritten digits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ood_nolabels.data.images import ArrayImages, ImageSource, LabeledImages


class DigitsSource(ImageSource):
    """1,797 real digits, split once into stratified train/test parts with a fixed seed.

    Normal and OOD configs share ``test_fraction`` and ``seed``, so the OOD test images (the other
    classes) come from the same held-out split as the normal test images and never from training.
    """

    def __init__(
        self, classes: Sequence[int] | None = None, test_fraction: float = 0.3, seed: int = 0
    ) -> None:
        super().__init__(classes)
        self.test_fraction = test_fraction
        self.seed = seed

    def _load(self, split: str) -> LabeledImages:
        digits = load_digits()
        pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        train_idx, test_idx = train_test_split(
            np.arange(len(pixels)),
            test_size=self.test_fraction,
            stratify=digits.target,
            random_state=self.seed,
        )
        idx = train_idx if split == "train" else test_idx
        return ArrayImages(pixels[idx], digits.target[idx])
