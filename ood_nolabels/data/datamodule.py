"""The normal dataset and its OOD test sets, served as dataloaders for any backbone's transform."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ood_nolabels.data.images import (
    ImageSource,
    IndexedDataset,
    LabeledImages,
    check_image_files,
)
from ood_nolabels.data.sampling import EpochShuffle
from ood_nolabels.data.splits import NORMAL_TEST, NORMAL_TRAIN


class OODDataModule(L.LightningDataModule):
    """Train-normal, test-normal and one test split per OOD set.

    Images are loaded once in :meth:`setup`; each stage asks for loaders with its own backbone's
    transform, so a SimCLR backbone and a pretrained ViT can read the same data.

    :meth:`setup` stops on bad input before any stage trains: it loads every split and names all
    missing data sets in one error, then (unless ``check_images`` is false) opens and decodes
    every image file once and lists all unreadable ones in one error.

    ``num_workers``, ``pin_memory`` and ``persistent_workers`` (workers kept alive across epochs
    and evaluations; only with ``num_workers > 0``) apply to every loader; the trainer config
    group chooses them (``conf/trainer/``).
    """

    def __init__(
        self,
        normal: ImageSource,
        ood: Mapping[str, ImageSource],
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        check_images: bool = True,
        persistent_workers: bool = False,
    ) -> None:
        super().__init__()
        if not ood:
            raise ValueError("no OOD sets configured: choose an `ood=` config")
        clash = {NORMAL_TRAIN, NORMAL_TEST} & set(ood)
        if clash:
            raise ValueError(f"OOD set names {sorted(clash)} are reserved")
        self.normal = normal
        self.ood = dict(ood)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.check_images = check_images
        self.images: dict[str, LabeledImages] = {}
        self._fingerprints: dict[str, str] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.images:
            return
        images = self.load_all()
        empty = [name for name, split in images.items() if len(split) == 0]
        if empty:
            raise ValueError(f"these splits have no images: {empty}")
        if self.check_images:
            check_image_files(images)
        self.images = images

    def load_all(self) -> dict[str, LabeledImages]:
        """Every split, or one FileNotFoundError naming every missing data set with a count.

        Sets are named as in the config: ``dataset`` (the normal data) and ``ood.<name>``.
        """
        wanted = [("dataset", NORMAL_TRAIN, self.normal, "train")]
        wanted += [("dataset", NORMAL_TEST, self.normal, "test")]
        wanted += [(f"ood.{name}", name, source, "test") for name, source in self.ood.items()]
        images: dict[str, LabeledImages] = {}
        missing: dict[str, list[str]] = {}
        for data_set, split_name, source, split in wanted:
            try:
                images[split_name] = source.load(split)
            except FileNotFoundError as error:
                messages = missing.setdefault(data_set, [])
                if str(error) not in messages:  # CIFAR's train and test need the same files
                    messages.append(str(error))
        if missing:
            total = 1 + len(self.ood)
            verb = "are" if len(missing) > 1 else "is"
            details = "\n\n".join(
                f"{data_set}: " + "\n".join(messages) for data_set, messages in missing.items()
            )
            raise FileNotFoundError(
                f"{len(missing)} of {total} data sets {verb} missing: {', '.join(missing)}\n\n"
                + details
            )
        return images

    @property
    def ood_names(self) -> list[str]:
        return list(self.ood)

    def fingerprint(self, split: str = NORMAL_TRAIN) -> str:
        """A digest of a split's images and labels (see ``LabeledImages.fingerprint``), computed
        once: what the cached stages that train on it are keyed by, whatever the path or config
        that found the images."""
        self.setup()
        if split not in self._fingerprints:
            self._fingerprints[split] = self.images[split].fingerprint()
        return self._fingerprints[split]

    def train_labels(self) -> torch.Tensor | None:
        """Ground-truth labels of the normal training images, when the dataset has them and they
        name at least two classes: one class is no labeling to measure a clustering against
        (a folder of unlabeled images inside one subfolder, say)."""
        self.setup()
        labels = self.images[NORMAL_TRAIN].labels
        if labels is None or len(set(labels.tolist())) < 2:
            return None
        return torch.as_tensor(labels)

    def loader(self, split: str, transform: Callable[[Image.Image], torch.Tensor]) -> DataLoader:
        """A loader of ``(image, index)`` batches for one split, in dataset order."""
        self.setup()
        return DataLoader(
            IndexedDataset(self.images[split], transform),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_loader(self, dataset: Dataset, batch_size: int) -> DataLoader:
        """Shuffled training batches (an :class:`EpochShuffle`: each epoch's order and random
        stream follow from its number); the last partial batch is dropped when there are
        others."""
        return DataLoader(
            dataset,
            batch_size=min(batch_size, len(dataset)),
            sampler=EpochShuffle(len(dataset)),
            drop_last=len(dataset) > batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def eval_loaders(
        self, transform: Callable[[Image.Image], torch.Tensor]
    ) -> dict[str, DataLoader]:
        """Loaders for every split in a fixed order: normal train, normal test, OOD sets."""
        self.setup()
        return {split: self.loader(split, transform) for split in self.images}
