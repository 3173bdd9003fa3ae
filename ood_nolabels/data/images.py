"""Image collections behind one small interface.

Every dataset source (digits, CIFAR, folders, ...) returns :class:`LabeledImages`: an indexable
collection of PIL images with optional integer labels. Transforms and indices are added later by
:class:`IndexedDataset`, so sources stay independent of the backbone that consumes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


class LabeledImages(Dataset):
    """Base class: ``get_image(i)`` returns a PIL image; ``labels`` is an int array or None."""

    labels: np.ndarray | None

    def __len__(self) -> int:
        raise NotImplementedError

    def get_image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Image.Image:
        return self.get_image(index)

    def subset(self, keep: np.ndarray) -> LabeledImages:
        """The images selected by a boolean mask or an index array."""
        return SubsetImages(self, np.flatnonzero(keep) if keep.dtype == bool else keep)

    def with_classes(self, classes: Sequence[int] | None) -> LabeledImages:
        """Only the images whose label is in ``classes`` (all images when ``classes`` is None)."""
        if classes is None:
            return self
        if self.labels is None:
            raise ValueError("cannot select classes of an unlabeled image collection")
        missing = sorted(set(classes) - set(np.unique(self.labels).tolist()))
        if missing:
            raise ValueError(f"classes {missing} do not occur in this dataset")
        return self.subset(np.isin(self.labels, list(classes)))


class ArrayImages(LabeledImages):
    """In-memory uint8 images of shape (N, H, W) or (N, H, W, C)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(
                f"expected uint8 images (N,H,W[,C]), got {images.dtype} {images.shape}"
            )
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def get_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


class FileImages(LabeledImages):
    """Images read lazily from files; an unreadable file raises an error naming it."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray | None = None) -> None:
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"{len(paths)} files but {len(labels)} labels")
        self.paths = [Path(p) for p in paths]
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def get_image(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, ValueError) as error:
            raise RuntimeError(
                f"cannot read image {path}: {error}. Remove or replace the file and run again."
            ) from error


class SubsetImages(LabeledImages):
    """A view on selected indices of another collection."""

    def __init__(self, base: LabeledImages, indices: np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = None if base.labels is None else base.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def get_image(self, index: int) -> Image.Image:
        return self.base.get_image(int(self.indices[index]))


class IndexedDataset(Dataset):
    """Yields ``(transform(image), index)``: the index lets DDP gathers drop padded duplicates."""

    def __init__(self, images: LabeledImages, transform: Callable[[Image.Image], torch.Tensor]):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images.get_image(index)), index


SPLITS = ("train", "test")


class ImageSource:
    """A dataset with a ``train`` and a ``test`` split, optionally restricted to some classes.

    Subclasses implement :meth:`_load`; :meth:`load` validates the split and applies ``classes``
    (how the normal classes of a one-vs-rest benchmark are chosen).
    """

    def __init__(self, classes: Sequence[int] | None = None) -> None:
        self.classes = None if classes is None else [int(c) for c in classes]

    def load(self, split: str) -> LabeledImages:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self._load(split).with_classes(self.classes)

    def _load(self, split: str) -> LabeledImages:
        raise NotImplementedError


def missing_data_error(dataset: str, root: Path | str, layout: str, hint: str) -> FileNotFoundError:
    """An error that says where data was looked for, the expected layout (relative to ``root``)
    and how to get the data."""
    return FileNotFoundError(
        f"{dataset} not found under {Path(root).resolve()}.\n"
        f"Expected layout:\n{layout.rstrip()}\n{hint}"
    )


class NeighborsDataset(Dataset):
    """Yields ``(transform(anchor), transform(random mined neighbour), index)`` for SCAN."""

    def __init__(
        self,
        images: LabeledImages,
        neighbors: torch.Tensor,
        transform: Callable[[Image.Image], torch.Tensor],
    ) -> None:
        if len(neighbors) != len(images):
            raise ValueError(f"{len(images)} images but neighbours for {len(neighbors)}")
        self.images = images
        self.neighbors = neighbors
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        choice = int(torch.randint(self.neighbors.shape[1], ()))
        neighbor = int(self.neighbors[index, choice])
        return (
            self.transform(self.images.get_image(index)),
            self.transform(self.images.get_image(neighbor)),
            index,
        )
