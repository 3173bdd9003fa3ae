"""Cost as the data grows: every step of a Fashion-MNIST run at several training-set sizes.

Runs a preset (default ``+experiment=fmnist``, the method) in this process at 500, 2,000 and
6,000 normal training images per class (3,000, 12,000 and 36,000 images for a 6-class split), each
from an empty artifact directory, and prints one table: for every step of the run's own timing
table (the cached stages, each model's scoring, the figures) its wall time and the peak resident
memory of the process while it ran (sampled every 0.2 s with psutil), so the growth of feature
extraction, mining, clustering, finetuning and scoring is visible; then what each run measured
(AUROC, stage-1 accuracy, feature drift)::

    python -m benchmarks.fashion_mnist_scale                       # about 2 hours on 2 cores
    python -m benchmarks.fashion_mnist_scale --per-class 100 300 --experiment fmnist_small
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from ood_nolabels.config import compose
from ood_nolabels.core.tables import markdown_table
from ood_nolabels.core.timings import Timings
from ood_nolabels.train import run


class MemorySampler:
    """The process's resident memory every ``interval`` seconds, on a background thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._process = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._process.memory_info().rss))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float, end: float) -> int:
        inside = [rss for moment, rss in self.samples if start <= moment <= end]
        return max(inside, default=0)


def measure(
    experiment: str, per_class: int, overrides: Sequence[str]
) -> tuple[list[list[str]], dict[str, float]]:
    """One run at ``per_class`` images per class: ``[step, images, seconds, peak MiB]`` rows,
    and the run's metrics."""
    steps: list[tuple[str, str, float, float]] = []  # (step, outcome, seconds, end time)
    original = Timings.add

    def add(self: Timings, step: str, outcome: str, seconds: float) -> None:
        steps.append((step, outcome, seconds, time.perf_counter()))
        original(self, step, outcome, seconds)

    Timings.add = add
    try:
        with tempfile.TemporaryDirectory(prefix="fmnist_scale_") as work, MemorySampler() as memory:
            cfg = compose(
                f"+experiment={experiment}",
                f"dataset.train_per_class={per_class}",
                "logger=none",
                f"paths.artifact_dir={work}/artifacts",
                *overrides,
                output_dir=Path(work) / "run",
            )
            start = time.perf_counter()
            metrics = run(cfg)
            total = time.perf_counter() - start
            rows = [
                [
                    step.split("-")[0],
                    f"{seconds:.1f}",
                    f"{memory.peak(end - seconds, end) / 2**20:.0f}",
                ]
                for step, _, seconds, end in steps
            ]
            rows.append(
                [
                    "whole run",
                    f"{total:.1f}",
                    f"{memory.peak(start, time.perf_counter()) / 2**20:.0f}",
                ]
            )
    finally:
        Timings.add = original
    images = f"{per_class * len(cfg.dataset.classes):,}"
    return [[step, images, seconds, peak] for step, seconds, peak in rows], metrics


QUALITY = {
    "kNN AUROC": "ood/held_out_classes/knn/auroc",
    "Mahalanobis AUROC": "ood/held_out_classes/mahalanobis/auroc",
    "stage-1 accuracy": "cluster/acc",
    "linear CKA": "drift/linear_cka",
}


def quality_row(images: str, metrics: dict[str, float]) -> list[str]:
    """AUROCs and accuracy in percent, drift as is; "-" for what the run did not measure."""
    cells = []
    for name, key in QUALITY.items():
        value = metrics.get(key)
        scale = 1 if name == "linear CKA" else 100
        cells.append("-" if value is None else f"{scale * value:.{3 if scale == 1 else 1}f}")
    return [images, *cells]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="fmnist")
    parser.add_argument("--per-class", type=int, nargs="+", default=[500, 2000, 6000])
    parser.add_argument("overrides", nargs="*", help="more overrides for every run")
    args = parser.parse_args(argv)
    rows, quality = [], []
    for n in args.per_class:
        steps, metrics = measure(args.experiment, n, args.overrides)
        rows += steps
        quality.append(quality_row(steps[0][1], metrics))
    header = ["step", "normal training images", "seconds", "peak memory (MiB)"]
    print(f"+experiment={args.experiment}, {psutil.cpu_count()} CPUs\n")
    print(markdown_table(header, rows), "\n")
    print(markdown_table(["normal training images", *QUALITY], quality))


if __name__ == "__main__":
    main()
