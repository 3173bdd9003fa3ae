"""Datasets stored as plain image folders: ImageNet-30, the OOD benchmark sets, a user's own photos.

Images are found recursively and sorted, so runs are deterministic on any filesystem. A split
directory whose images all sit in subdirectories is labeled by the sorted subdirectory index (as
torchvision's ``ImageFolder``); a folder with images directly inside it is one unlabeled
collection, which is the main use case: a user's own set of normal images needs no labels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ood_nolabels.data.images import FileImages, ImageSource, LabeledImages, missing_data_error

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

MISSING_HINT = (
    "these images are never downloaded automatically: extract the archive there, or point the "
    "config's root (or the OOD_DATA_DIR environment variable) at an existing copy"
)

# Expected layouts relative to ``root``, keyed by the ``name`` a config passes.
LAYOUTS: dict[str, str] = {
    "imagenet30": (
        "ImageNet-30 (Hendrycks et al. 2019):\n"
        "  train/<class>/*.JPEG  (30 class folders; one_class_train in the original archive)\n"
        "  test/<class>/*.JPEG   (one_class_test in the original archive)\n"
        "  (keep the archive's names by setting dataset.train_dir / dataset.test_dir)"
    ),
    "cub200": "CUB-200-2011, whole set used as OOD test:\n  CUB_200_2011/images/<class>/*.jpg",
    "dogs": "Stanford Dogs, whole set used as OOD test:\n  Images/<breed>/*.jpg",
    "pets": "Oxford-IIIT Pets, whole set used as OOD test:\n  images/*.jpg",
    "flowers102": "Oxford Flowers-102 (102flowers.tgz), whole set used as OOD test:\n  jpg/*.jpg",
    "food101": "Food-101, whole set used as OOD test:\n  images/<class>/*.jpg",
    "places365": "Places-365, any folder of images, e.g. the validation set:\n  val_256/*.jpg",
    "caltech256": "Caltech-256, whole set used as OOD test:\n  256_ObjectCategories/<class>/*.jpg",
    "lsun": "LSUN (resized OOD-benchmark version, LSUN_resize.tar.gz):\n  LSUN_resize/**/*.jpg",
    "lsun_fix": "LSUN-FIX (the OOD-benchmark version from CSI, Tack et al. 2020):\n  LSUN_fix/**/*",
    "imagefolder": (
        "your own images (any depth of subfolders; class subfolders are optional):\n"
        "  train/**/*  normal images used for training\n"
        "  test/**/*   images to score"
    ),
    "imagefolder_ood": "your own OOD test images (any depth of subfolders):\n  **/*",
}


def find_images(directory: Path) -> list[Path]:
    """Image files under ``directory`` at any depth (following links), sorted; hidden ones skipped.

    Hidden files are skipped because archives made on macOS carry ``._name.jpg`` resource forks
    that are not images. A linked folder is followed once: a link back to a folder already
    walked (a loop such as ``up -> .``, or two links to one folder) is skipped with a warning, so
    no image is read twice.
    """
    found = []
    walked: set[tuple[int, int]] = set()
    skipped: list[str] = []
    for parent, subdirs, files in os.walk(directory, followlinks=True):
        status = os.stat(parent)
        if (status.st_dev, status.st_ino) in walked:
            skipped.append(parent)
            subdirs[:] = []
            continue
        walked.add((status.st_dev, status.st_ino))
        # a fixed order, real folders before links: an image reached both ways keeps its real path
        visible = [d for d in subdirs if not d.startswith(".")]
        subdirs[:] = sorted(visible, key=lambda d: (os.path.islink(os.path.join(parent, d)), d))
        found += [
            Path(parent, f)
            for f in files
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
        ]
    if skipped:
        log.warning(
            "%s: skipped %d linked folder(s) already walked (a link loop or a second link to "
            "one folder), e.g. %s; their images are read once",
            directory,
            len(skipped),
            skipped[0],
        )
    return sorted(found)


def class_index(directory: Path, paths: Sequence[Path]) -> np.ndarray | None:
    """Sorted-subdirectory labels, or None when some image lies directly in ``directory``."""
    tops = [path.relative_to(directory).parts for path in paths]
    if any(len(parts) == 1 for parts in tops):
        return None
    names = sorted(d.name for d in directory.iterdir() if d.is_dir() and not d.name.startswith("."))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[parts[0]] for parts in tops], dtype=np.int64)


class FolderSource(ImageSource):
    """Images from ``root/train_dir`` and ``root/test_dir``.

    A split dir of ``"."`` is the whole root; ``None`` means the dataset has no such split (OOD-only
    sets have no train split). ``name`` selects the expected layout shown when data is missing;
    pass ``layout`` to describe a dataset not in :data:`LAYOUTS`.
    """

    def __init__(
        self,
        root: str,
        train_dir: str | None = "train",
        test_dir: str | None = "test",
        classes: Sequence[int] | None = None,
        name: str = "imagefolder",
        layout: str | None = None,
    ) -> None:
        super().__init__(classes)
        if layout is None and name not in LAYOUTS:
            raise ValueError(
                f"no layout known for {name!r}: pass layout=... or use one of {sorted(LAYOUTS)}"
            )
        self.root = Path(root).expanduser()
        self.dirs = {"train": train_dir, "test": test_dir}
        self.name = name
        self.layout = LAYOUTS[name] if layout is None else layout

    def _load(self, split: str) -> LabeledImages:
        subdir = self.dirs[split]
        if subdir is None:
            raise ValueError(
                f"{self.name} has no {split} split ({split}_dir is null; OOD-only sets are loaded "
                f"with split 'test' only). Set {split}_dir to the folder of its {split} images."
            )
        directory = self.root / subdir
        paths = find_images(directory) if directory.is_dir() else []
        if not paths and directory.is_dir():
            extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise FileNotFoundError(
                f"{self.name} {split} images: the folder {directory.resolve()} exists but holds no "
                f"image file (looked for {extensions} at any depth, hidden files skipped). Put "
                f"the images there as {self.layout}, or point the config's root (or OOD_DATA_DIR) "
                "at the folder that holds them."
            )
        if not paths:
            raise missing_data_error(
                f"{self.name} {split} images ({directory})", self.root, self.layout, MISSING_HINT
            )
        return FileImages(paths, class_index(directory, paths))
