"""What a detector scores: image files, folders of them, PIL images; unreadable ones set aside."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ood_nolabels.data.folders import find_images
from ood_nolabels.data.images import UnsupportedImageMode, read_image_file

ImageInput = Image.Image | str | Path


def image_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given and every image under each folder (sorted, at any depth), in input order.

    A path that does not exist, or a folder without images, is an error naming it.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = find_images(path)
            if not found:
                raise FileNotFoundError(f"no image files under the folder {path}")
            paths += found
        elif path.exists():
            paths.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return paths


@dataclass
class ScoredImages:
    """Scores of the readable inputs and why the others could not be read.

    ``scores[scorer]`` holds one score per entry of ``indices`` (positions in the input list).
    """

    indices: list[int]
    scores: dict[str, torch.Tensor]
    unreadable: dict[int, str] = field(default_factory=dict)


class ImageInputs(Dataset):
    """``(tensor, position, None)`` per readable input, ``(None, position, reason)`` otherwise."""

    def __init__(self, items: Sequence[ImageInput], transform: Callable) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str | None]:
        item = self.items[index]
        try:
            image = item if isinstance(item, Image.Image) else read_image_file(Path(item))
        except (RuntimeError, UnsupportedImageMode) as error:
            return None, index, str(error)
        return self.transform(image), index, None


def batches_within(group_sizes: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of at most ``batch_size`` over consecutive groups, never spanning two."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    batches, start = [], 0
    for size in group_sizes:
        batches += [
            list(range(first, min(first + batch_size, start + size)))
            for first in range(start, start + size, batch_size)
        ]
        start += size
    return batches


def collate_readable(batch: list) -> tuple[torch.Tensor | None, list[int], dict[int, str]]:
    readable = [(tensor, index) for tensor, index, problem in batch if problem is None]
    unreadable = {index: problem for _, index, problem in batch if problem is not None}
    images = torch.stack([tensor for tensor, _ in readable]) if readable else None
    return images, [index for _, index in readable], unreadable
