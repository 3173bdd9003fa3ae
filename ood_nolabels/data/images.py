"""Image collections behind one small interface.

Every dataset source (digits, CIFAR, folders, ...) returns :class:`LabeledImages`: an indexable
collection of PIL images with optional integer labels. Transforms and indices are added later by
:class:`IndexedDataset`, so sources stay independent of the backbone that consumes them.

Image files are converted to 8-bit RGB by :func:`to_rgb8` (16-bit grayscale scaled, transparency
composited on white, modes without a safe mapping refused), and :func:`check_image_files` opens
and decodes every file of a run up front, so a broken file stops the run before any training.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

log = logging.getLogger(__name__)


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale (digits, some folder images) to the 3 channels every pretrained model expects."""
    return image.convert("RGB")


class LabeledImages(Dataset):
    """Base class: ``get_image(i)`` returns a PIL image; ``labels`` is an int array or None."""

    labels: np.ndarray | None

    def __len__(self) -> int:
        raise NotImplementedError

    def get_image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def files(self) -> list[Path]:
        """The image files read by :meth:`get_image`, in order; empty for in-memory images."""
        return []

    def fingerprint(self) -> str:
        """A digest of the images (and labels) themselves, not of where or how they were found:
        the cached stages' key for the data they train on."""
        raise NotImplementedError(f"{type(self).__name__} has no fingerprint")

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

    def fingerprint(self) -> str:
        """The pixels and labels, hashed (a 60,000 x 28 x 28 set takes about 0.1 s)."""
        digest = hashlib.sha256(f"{self.images.shape}|{self.images.dtype}".encode())
        digest.update(np.ascontiguousarray(self.images).data)
        digest.update(b"none" if self.labels is None else self.labels.tobytes())
        return digest.hexdigest()


class FileImages(LabeledImages):
    """Images read lazily from files; an unreadable file raises an error naming it."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray | None = None) -> None:
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"{len(paths)} files but {len(labels)} labels")
        self.paths = [Path(p) for p in paths]
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def files(self) -> list[Path]:
        return list(self.paths)

    def get_image(self, index: int) -> Image.Image:
        return read_image_file(self.paths[index])

    def fingerprint(self) -> str:
        """Every file's path relative to the files' common folder, size and modification time
        (one ``stat`` each: fast for a million files), and the labels. The same files moved or
        copied with their times (``mv``, ``cp -a``, ``rsync -a``) keep it; a file rewritten,
        added or removed changes it."""
        root = Path(os.path.commonpath([p.parent for p in self.paths])) if self.paths else None
        digest = hashlib.sha256()
        for path in self.paths:
            status = path.stat()
            relative = path.relative_to(root).as_posix()
            digest.update(f"{relative}|{status.st_size}|{status.st_mtime_ns}\n".encode())
        digest.update(b"none" if self.labels is None else self.labels.tobytes())
        return digest.hexdigest()


def read_image_file(path: Path) -> Image.Image:
    """The 8-bit RGB image in ``path`` (:func:`to_rgb8`); an error naming the file otherwise:
    :class:`UnsupportedImageMode`, or a RuntimeError for a file that cannot be read or decoded."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb8(image, path)
    except UnsupportedImageMode:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
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

    def files(self) -> list[Path]:
        files = self.base.files()
        return [files[i] for i in self.indices.tolist()] if files else []

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.base.fingerprint().encode())
        digest.update(self.indices.tobytes())
        return digest.hexdigest()


class UnsupportedImageMode(ValueError):
    """An image whose pixel mode has no safe mapping to 8-bit RGB."""

    def __init__(self, path: Path | str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = Path(path)
        self.detail = detail


SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
CONVERTIBLE_MODES = frozenset({"RGB", "RGBX", "L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV"})


def to_rgb8(image: Image.Image, path: Path | str) -> Image.Image:
    """A new 8-bit RGB copy of a loaded ``image`` read from ``path`` (named in errors).

    * 8-bit modes (L, P, CMYK, YCbCr, ...) go through PIL's own ``convert("RGB")``.
    * 16-bit grayscale (``I;16*``, and ``I``: 32-bit integers holding 16-bit data, as some
      readers return 16-bit files) is scaled to 8 bits, value / 257 rounded, so 65535 is white.
      PIL's ``convert`` would clip every value above 255 to white instead. ``I`` values outside
      0..65535 cannot be scaled safely and are refused.
    * Transparency (RGBA, LA, PA, or a palette/colour key marked transparent) is composited on
      white, as an image viewer shows it, rather than dropped: dropping the alpha channel exposes
      whatever colour the editor left in the transparent pixels, often black, sometimes garbage.
    * Anything else, e.g. ``F`` (32-bit float, no known value range), raises
      :class:`UnsupportedImageMode` naming the file and the mode.
    """
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise UnsupportedImageMode(
                path,
                f"mode I (32-bit integer) with values {values.min()}..{values.max()}, outside "
                "the 16-bit range 0..65535 that can be scaled to 8 bits; save it as an 8-bit or "
                "16-bit image",
            )
        gray = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(value / 257)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1))
    if mode in ALPHA_MODES or (mode in CONVERTIBLE_MODES and "transparency" in image.info):
        rgba = image.convert("LA" if mode == "La" else "RGBA").convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in CONVERTIBLE_MODES:
        return image.convert("RGB")
    what = "32-bit floating point, whose value range is unknown" if mode == "F" else "unusual"
    raise UnsupportedImageMode(
        path,
        f"mode {mode} ({what}) cannot be converted to 8-bit RGB safely; save it as an 8-bit or "
        "16-bit image",
    )


MAX_LISTED = 20


class UnreadableImagesError(RuntimeError):
    """Image files of a run that cannot be opened, decoded or converted, listed together."""


def image_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or None when it decodes and converts.

    JPEGs are decoded at 1/8 scale (``Image.draft``): the decoder still reads every byte, so a
    truncated or corrupt file fails, at a fraction of the cost of a full decode.
    """
    try:
        with Image.open(path) as image:
            image.draft(None, (1, 1))  # no-op for formats other than JPEG
            image.load()
            to_rgb8(image, path)
    except UnsupportedImageMode as error:
        return error.detail
    except UnidentifiedImageError:
        return "not an image in a format PIL can read (cannot identify image file)"
    except Exception as error:  # any failure to decode is what this check reports
        return f"{type(error).__name__}: {error}"
    return None


def check_image_files(images: Mapping[str, LabeledImages], workers: int | None = None) -> int:
    """Open and decode every image file of ``images`` (keyed by set name) in a thread pool.

    Raises one :class:`UnreadableImagesError` listing the unreadable files (the first
    :data:`MAX_LISTED` with their reason, then a count of the rest); returns how many files were
    checked. In-memory collections have no files and cost nothing. PIL releases the GIL while it
    reads and decodes, so threads scale.
    """
    sets_of: dict[Path, list[str]] = {}
    for name, collection in images.items():
        for path in collection.files():
            sets_of.setdefault(path, []).append(name)
    if not sets_of:
        return 0
    start = time.perf_counter()
    paths = list(sets_of)
    with ThreadPoolExecutor(workers) as pool:
        problems = [
            (path, problem)
            for path, problem in zip(paths, pool.map(image_file_problem, paths), strict=True)
            if problem is not None
        ]
    seconds = time.perf_counter() - start
    if problems:
        lines = [f"  [{', '.join(sets_of[p])}] {p}: {why}" for p, why in problems[:MAX_LISTED]]
        if len(problems) > MAX_LISTED:
            lines.append(f"  ... and {len(problems) - MAX_LISTED:,} more")
        plural = "s" if len(problems) > 1 else ""
        raise UnreadableImagesError(
            f"{len(problems):,} unreadable image file{plural} (of {len(paths):,} checked in "
            f"{seconds:.1f} s):\n" + "\n".join(lines) + "\nFix: remove or replace these files, "
            "then run again (++data.check_images=false skips this check; the run then fails "
            "when it first reads one of them)."
        )
    log.info("checked %s images in %.1f s", f"{len(paths):,}", seconds)
    return len(paths)


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
