"""Training batches whose randomness belongs to their epoch, so a resumed run ends exactly as an
uninterrupted one."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

MAX_SEED = 2**31 - 1


class EpochShuffle(Sampler[int]):
    """A shuffle that is a function of ``(seed, epoch)``, and the start of that epoch's random
    stream.

    When an epoch's indices are first drawn, the global generators (torch, numpy, random) are
    seeded from ``(seed, epoch)`` too, so the augmentations of the epoch (and the neighbours SCAN
    samples) follow from it as well, in a loader without worker processes. An epoch resumed from
    the previous epoch's checkpoint then sees the batches an uninterrupted run sees. ``epoch`` is
    read when the epoch starts (the runtime binds it to the trainer's epoch); ``seed`` is drawn
    from the global generator when the sampler is made, which every stage seeds first.
    """

    def __init__(self, size: int, seed: int | None = None) -> None:
        self.size = size
        self.seed = int(torch.randint(MAX_SEED, ()).item()) if seed is None else seed
        self.epoch: Callable[[], int] = lambda: 0

    def __len__(self) -> int:
        return self.size

    def epoch_seed(self, epoch: int) -> int:
        return (self.seed * 1_000_003 + epoch) % MAX_SEED

    def __iter__(self) -> Iterator[int]:
        seed = self.epoch_seed(self.epoch())
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(seed))
        yield from order.tolist()
