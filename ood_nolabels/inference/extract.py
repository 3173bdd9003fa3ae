"""Features of the images a detector scores, in one process or data-parallel over several.

The batches are fixed before any work starts (CPU convolutions give slightly different features
for an image in batches of other sizes), so splitting them into contiguous shards, one per
process, and concatenating the shards' features in shard order gives the one-process features in
input order, bit for bit when every process uses the same number of threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import multiprocessing
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ood_nolabels.inference.inputs import ImageInput, ImageInputs, collate_readable
from ood_nolabels.models.backbones import Backbone


@dataclass
class Extracted:
    """Features of the readable inputs (rows in ``indices`` order) and the unreadable ones."""

    features: list[torch.Tensor] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    unreadable: dict[int, str] = field(default_factory=dict)

    def add(self, other: Extracted) -> None:
        self.features += other.features
        self.indices += other.indices
        self.unreadable |= other.unreadable


def extract(
    backbone: Backbone,
    images: Sequence[ImageInput],
    batches: Sequence[list[int]],
    device: torch.device,
    num_workers: int = 0,
    progress: bool = False,
) -> Extracted:
    """The backbone's float32 features of ``images``, batch by batch as given, on the CPU."""
    loader = DataLoader(
        ImageInputs(images, backbone.transform()),
        batch_sampler=list(batches),
        num_workers=num_workers,
        collate_fn=collate_readable,
        pin_memory=device.type == "cuda",
    )
    backbone.to(device).eval()
    out = Extracted()
    with torch.inference_mode():
        for batch, positions, problems in tqdm(
            loader, desc="scoring", unit="batch", disable=not progress
        ):
            out.unreadable |= problems
            if batch is not None:
                out.features.append(backbone(batch.to(device, non_blocking=True)).float().cpu())
                out.indices += positions
    return out


def _shard(args: tuple) -> Extracted:
    backbone, images, batches, device, threads, num_workers = args
    torch.set_num_threads(threads)
    return extract(backbone, images, batches, torch.device(device), num_workers)


def process_devices(device: torch.device, processes: int) -> list[str]:
    """One device per process: ``cuda:0`` .. ``cuda:N-1`` for a CUDA detector (N GPUs needed),
    else the CPU in every process."""
    if processes < 1:
        raise ValueError(f"--devices must be >= 1, got {processes}")
    if device.type != "cuda":
        return ["cpu"] * processes
    available = torch.cuda.device_count()
    if processes > available:
        raise ValueError(f"--devices {processes} but only {available} GPU(s) are visible")
    return [f"cuda:{index}" for index in range(processes)]


def extract_parallel(
    backbone: Backbone,
    images: Sequence[ImageInput],
    batches: Sequence[list[int]],
    devices: Sequence[str],
    threads: int,
    num_workers: int = 0,
) -> Extracted:
    """:func:`extract` in ``len(devices)`` spawned processes, ``threads`` torch threads each,
    each over a contiguous shard of the batches; the shards come back in input order."""
    shards = [list(part) for part in _split(list(batches), len(devices))]
    backbone = backbone.cpu()
    jobs = [
        (backbone, images, shard, device, threads, num_workers)
        for shard, device in zip(shards, devices, strict=True)
    ]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        results = pool.map(_shard, jobs)
    out = Extracted()
    for result in results:
        out.add(result)
    return out


def _split(batches: list[list[int]], parts: int) -> list[list[list[int]]]:
    """``parts`` contiguous runs of batches whose sizes differ by at most one batch."""
    size, extra = divmod(len(batches), parts)
    runs, start = [], 0
    for part in range(parts):
        end = start + size + (part < extra)
        runs.append(batches[start:end])
        start = end
    return runs
