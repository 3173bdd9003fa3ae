"""Every stage benchmark in one run; (re)writes benchmarks/RESULTS.md with the machine.

Usage: python -m benchmarks.run_all [--repeats 3 --note "quiet machine"]
(`make bench`). Ratios are framework / bare PyTorch time, medians of interleaved runs; the
target is <= 1.10 for each stage.
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

from benchmarks import augmentation, evaluation, finetune_epoch, scan_epoch, simclr_epoch
from benchmarks.common import StageTiming, machine
from ood_nolabels.core.tables import markdown_table

RESULTS = Path(__file__).with_name("RESULTS.md")
TARGET = 1.10


def stage_rows(timings: list[StageTiming]) -> list[list[str]]:
    return [
        [
            t.stage,
            f"{t.framework_seconds:.3f} s / {t.unit}",
            f"{t.bare_seconds:.3f} s",
            f"{t.ratio:.2f}" + ("" if t.ratio <= TARGET else " (over target)"),
            t.workload,
        ]
        for t in timings
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--note", default="", help="e.g. how busy the machine was")
    args = parser.parse_args()
    timings = [
        simclr_epoch.measure(repeats=args.repeats),
        scan_epoch.measure(repeats=args.repeats),
        finetune_epoch.measure(repeats=max(2, args.repeats - 1)),
        evaluation.measure(repeats=args.repeats),
    ]
    rates = augmentation.images_per_second("cpu")
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    fit = evaluation.mahalanobis_fit_seconds()
    table = markdown_table(
        ["stage", "framework", "bare PyTorch", "ratio", "workload"], stage_rows(timings)
    )
    text = "\n".join(
        [
            "# Benchmark results",
            "",
            f"Written by `python -m benchmarks.run_all --repeats {args.repeats}` (`make bench`) "
            f"on {datetime.date.today()}, OMP_NUM_THREADS={threads}.",
            f"Machine: {machine()}.",
            *([f"Note: {args.note}"] if args.note else []),
            "",
            "Ratio = framework time / bare PyTorch loop doing the same work on the same data "
            "(medians of interleaved runs; the two end with the same weights / AUROCs, checked). "
            f"Target: <= {TARGET:.2f}.",
            "",
            table,
            "",
            f"SimCLR augmentation, 32 px, two views, on CPU: PIL {rates['pil']:.0f} images/s, "
            f"batched kornia {rates['batched']:.0f} images/s "
            f"({rates['batched'] / rates['pil']:.2f}x).",
            f"Mahalanobis fit on 5,000 x 2,048 features (float64, 10 classes): {fit:.2f} s.",
            "",
        ]
    )
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
