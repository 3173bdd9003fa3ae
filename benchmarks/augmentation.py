"""SimCLR augmentation throughput: PIL per image in the data loader vs batched on a device.

Random 32 px RGB images (CIFAR's size) with SimCLR's CIFAR augmentation, two views each, in
batches of 256. ``pil``: :func:`simclr_transform` per image in ``--workers`` loader processes.
``batched``: the loader only converts to uint8 tensors; :func:`batch_simclr_augment` (kornia)
draws both views on ``--device`` (on a GPU: after a pinned-memory copy). Prints source images/s.
Usage: python -m benchmarks.augmentation [--device cpu --images 2048 --workers 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ood_nolabels.data.augment import TwoViews, batch_simclr_augment, simclr_transform
from ood_nolabels.data.images import IndexedDataset, LabeledImages
from ood_nolabels.models.cifar_resnet import CIFAR10_MEAN, CIFAR10_STD

SIZE = 32


class RandomImages(LabeledImages):
    labels = None

    def __init__(self, count: int, size: int = SIZE) -> None:
        rng = np.random.default_rng(0)
        self.pixels = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.pixels)

    def get_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.pixels[index])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(
    device: str = "cpu", images: int = 2048, batch_size: int = 256, workers: int = 0
) -> dict[str, float]:
    """Source images per second (two views each) of the PIL and the batched path."""
    device = torch.device(device)
    data = RandomImages(images)
    augment = batch_simclr_augment(SIZE, CIFAR10_MEAN, CIFAR10_STD).to(device)
    paths = {
        "pil": (TwoViews(simclr_transform(SIZE, CIFAR10_MEAN, CIFAR10_STD)), None),
        "batched": (augment.loader_transform(), augment),
    }
    rates = {}
    for name, (transform, on_device) in paths.items():
        loader = DataLoader(
            IndexedDataset(data, transform),
            batch_size=batch_size,
            num_workers=workers,
            pin_memory=device.type == "cuda",
        )
        torch.manual_seed(0)
        start = time.perf_counter()
        for batch, _ in loader:
            if on_device is None:
                views = [view.to(device, non_blocking=True) for view in batch]
            else:
                views = on_device.views(batch.to(device, non_blocking=True))
        synchronize(device)
        rates[name] = len(data) / (time.perf_counter() - start)
        assert views[0].shape[1:] == (3, SIZE, SIZE)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    rates = images_per_second(args.device, args.images, workers=args.workers)
    print(
        f"SimCLR views of {args.images} 32 px images on {args.device}, {args.workers} workers, "
        f"{torch.get_num_threads()} threads: PIL {rates['pil']:.0f} images/s, batched (kornia) "
        f"{rates['batched']:.0f} images/s ({rates['batched'] / rates['pil']:.2f}x)"
    )


if __name__ == "__main__":
    main()
