"""CIFAR-10, CIFAR-100 and SVHN read from their official on-disk formats through torchvision.

torchvision's own readers parse the files (python pickles, MATLAB ``.mat``) so the pixels match
every published benchmark; this module only checks for the files first, so a missing dataset gives
an error naming the expected files instead of torchvision's generic "not found or corrupted".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100, SVHN

from ood_nolabels.data.images import ArrayImages, ImageSource, LabeledImages, missing_data_error

MISSING_HINT = (
    "set dataset.download=true (needs internet) or point dataset.root / the OOD_DATA_DIR "
    "environment variable at an existing copy"
)


class _TorchvisionSource(ImageSource):
    """Shared checks and error handling; subclasses name the files and call the reader."""

    title: str

    def __init__(
        self, root: str, download: bool = False, classes: Sequence[int] | None = None
    ) -> None:
        super().__init__(classes)
        self.root = Path(root).expanduser()
        self.download = download

    def expected_files(self, split: str) -> list[str]:
        """Paths, relative to ``root``, that torchvision requires before it reads ``split``."""
        raise NotImplementedError

    def _read(self, split: str) -> ArrayImages:
        raise NotImplementedError

    def _load(self, split: str) -> LabeledImages:
        expected = self.expected_files(split)
        if not self.download and not all((self.root / name).is_file() for name in expected):
            layout = "".join(f"{self.root}/{name}\n" for name in expected)
            raise missing_data_error(self.title, self.root, layout, MISSING_HINT)
        try:
            return self._read(split)
        except RuntimeError as error:  # torchvision's md5 check failed on files that do exist
            raise RuntimeError(
                f"{self.title} files under {self.root} failed torchvision's md5 integrity check "
                f"({error}); they are incomplete or not the official release. Delete them and "
                "download again (dataset.download=true)."
            ) from error


class _CifarSource(_TorchvisionSource):
    """CIFAR python pickles: ``<base_folder>/`` holding the batches and the class-name metadata."""

    reader: type[CIFAR10]

    def expected_files(self, split: str) -> list[str]:
        """All batches and the metadata: torchvision checks both splits whichever one is read."""
        listed = self.reader.train_list + self.reader.test_list
        names = [name for name, _md5 in listed] + [self.reader.meta["filename"]]
        return [f"{self.reader.base_folder}/{name}" for name in names]

    def _read(self, split: str) -> ArrayImages:
        data = self.reader(str(self.root), train=split == "train", download=self.download)
        return ArrayImages(
            np.ascontiguousarray(data.data, dtype=np.uint8), np.asarray(data.targets)
        )


class CIFAR10Source(_CifarSource):
    """CIFAR-10: 50,000 train and 10,000 test 32x32 colour images of 10 classes."""

    title = "CIFAR-10"
    reader = CIFAR10


class CIFAR100Source(_CifarSource):
    """CIFAR-100 with its 100 fine labels (torchvision does not expose the 20 coarse ones)."""

    title = "CIFAR-100"
    reader = CIFAR100


class SVHNSource(_TorchvisionSource):
    """SVHN cropped digits (``*_32x32.mat``); "train" is the 73,257-image set, not "extra".

    Labels are 0-9: torchvision maps the file's label 10 to digit 0.
    """

    title = "SVHN"

    def expected_files(self, split: str) -> list[str]:
        """Only the split's own file, so SVHN used as an OOD test set needs just test_32x32.mat."""
        return [SVHN.split_list[split][1]]

    def _read(self, split: str) -> ArrayImages:
        data = SVHN(str(self.root), split=split, download=self.download)
        images = np.ascontiguousarray(data.data.transpose(0, 2, 3, 1), dtype=np.uint8)
        return ArrayImages(images, data.labels)
