"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017) from its four original idx files.

70,000 28x28 grayscale images of 10 clothing classes (60,000 train, 10,000 test). The files are
read by torchvision's MNIST-family reader, from the first of ``roots`` that holds them: gzipped
as published (Debian's ``dataset-fashion-mnist`` package installs them in
``/usr/share/datasets/fashion-mnist/``), unpacked, or in torchvision's ``FashionMNIST/raw/``
layout (where ``torchvision.datasets.FashionMNIST`` downloads them). A one-vs-rest benchmark
takes some ``classes`` as normal and the others (``exclude_classes``) as OOD;
``train_per_class`` subsamples the normal training set.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torchvision.datasets.mnist import read_image_file, read_label_file

from ood_nolabels.data.images import ArrayImages, ImageSource, LabeledImages

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
INSTALL_HINT = (
    "On Debian or Ubuntu: apt-get install dataset-fashion-mnist (it installs them in "
    "/usr/share/datasets/fashion-mnist/); or put the four files (gzipped or not) in "
    "${paths.data_dir}/fashion_mnist (OOD_DATA_DIR sets paths.data_dir), or set dataset.roots."
)


def find_file(folder: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` in ``folder`` or its torchvision layout ``FashionMNIST/raw``."""
    for directory in (folder, folder / "FashionMNIST" / "raw"):
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path, reader) -> np.ndarray:
    """One idx file through torchvision's MNIST-family reader, which reads unpacked files only:
    a gzipped one is unpacked into a temporary file first."""
    if path.suffix != ".gz":
        return reader(str(path)).numpy()
    with tempfile.TemporaryDirectory(prefix="fashion_mnist_") as temporary:
        target = Path(temporary) / path.stem
        with gzip.open(path, "rb") as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink)
        return reader(str(target)).numpy()


def read_split(files: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels of one split, a clear error for a damaged file."""
    images_file, labels_file = files
    try:
        images = read_idx(images_file, read_image_file)
        labels = read_idx(labels_file, read_label_file)
    except (OSError, EOFError, AssertionError, RuntimeError, ValueError) as error:
        raise RuntimeError(
            f"cannot read the Fashion-MNIST files {images_file} and {labels_file} "
            f"({type(error).__name__}: {error}): they are damaged or not idx files. " + INSTALL_HINT
        ) from error
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise RuntimeError(
            f"{images_file} holds images of shape {images.shape} for {labels.shape[0]} labels "
            f"in {labels_file}: expected (N, 28, 28) with N labels. " + INSTALL_HINT
        )
    return images, labels


class FashionMNISTSource(ImageSource):
    """Fashion-MNIST's ``train`` / ``test`` split, restricted to ``classes`` (all but
    ``exclude_classes`` when given), the training split subsampled to ``train_per_class`` images
    per class (a fixed random subset drawn with ``subsample_seed``)."""

    def __init__(
        self,
        roots: Sequence[str],
        classes: Sequence[int] | None = None,
        exclude_classes: Sequence[int] | None = None,
        train_per_class: int | None = None,
        subsample_seed: int = 0,
    ) -> None:
        if classes is not None and exclude_classes is not None:
            raise ValueError("give Fashion-MNIST classes or exclude_classes, not both")
        if exclude_classes is not None:
            classes = [c for c in range(len(CLASS_NAMES)) if c not in set(exclude_classes)]
        super().__init__(classes)
        if train_per_class is not None and train_per_class < 1:
            raise ValueError(f"dataset.train_per_class={train_per_class}: use >= 1, or null")
        self.roots = [Path(root).expanduser() for root in roots]
        self.train_per_class = train_per_class
        self.subsample_seed = subsample_seed

    def files(self, split: str) -> list[Path]:
        """The split's two idx files from the first root that holds both, or an error naming
        every folder tried, the file names and how to install them."""
        for root in self.roots:
            found = [find_file(root, name) for name in FILES[split]]
            if all(found):
                return found
        tried = "".join(f"  {root}\n" for root in self.roots)
        names = ", ".join(f"{name}[.gz]" for name in FILES[split])
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files not found. Looked in:\n{tried}for {names}. "
            + INSTALL_HINT
        )

    def _load(self, split: str) -> LabeledImages:
        images, labels = read_split(self.files(split))
        return ArrayImages(np.ascontiguousarray(images), labels)

    def load(self, split: str) -> LabeledImages:
        images = super().load(split)
        if split != "train" or self.train_per_class is None:
            return images
        rng = np.random.default_rng(self.subsample_seed)
        keep = []
        for label in np.unique(images.labels):
            members = np.flatnonzero(images.labels == label)
            if len(members) < self.train_per_class:
                raise ValueError(
                    f"dataset.train_per_class={self.train_per_class} but class {label} "
                    f"({CLASS_NAMES[label]}) has {len(members)} training images"
                )
            keep.append(rng.choice(members, self.train_per_class, replace=False))
        return images.subset(np.sort(np.concatenate(keep)))
