"""Score new images with a saved detector: ``python -m ood_nolabels.score <detector> <images...>``.

``<detector>`` is a run's ``detector.pt`` (or its run directory); inputs are image files and
folders (searched at any depth). Writes a CSV with one row per scored image (path, the score of
each scorer, and whether it lies above that scorer's threshold), prints a summary, and lists the
files that could not be read, which are skipped without losing the others. Also installed as the
``ood-score`` command.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ood_nolabels.core.tables import markdown_table
from ood_nolabels.inference.detector import Detector
from ood_nolabels.inference.extract import process_devices
from ood_nolabels.inference.inputs import ScoredImages, image_paths


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ood-score",
        description="Anomaly scores of images from a saved detector (higher = more anomalous).",
    )
    parser.add_argument("detector", type=Path, help="a run's detector.pt, or the run directory")
    parser.add_argument("inputs", nargs="+", type=Path, help="image files and/or folders")
    parser.add_argument("-o", "--output", type=Path, default=Path("ood_scores.csv"))
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="default: the run's data.batch_size, so the run's images get its exact scores",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: GPU if any)")
    parser.add_argument(
        "--keep",
        type=float,
        default=None,
        help="threshold keeping this fraction of the run's normal test images (default: saved)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        help="extract features data-parallel in N processes: one GPU each (cuda:0..N-1) for a "
        "GPU detector, else N CPU processes sharing the threads; the same scores as one",
    )
    parser.add_argument("--num-workers", type=int, default=0, help="image-loading processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.devices < 1:
        parser.error(f"--devices must be >= 1, got {args.devices}")
    return args


def write_csv(
    path: Path, files: Sequence[Path], scored: ScoredImages, flags: dict[str, torch.Tensor]
) -> None:
    """One row per scored file: path, then each scorer's score and ``<scorer>_is_ood``."""
    names = list(scored.scores)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", *(c for n in names for c in (n, f"{n}_is_ood"))])
        for row, index in enumerate(scored.indices):
            cells = [str(files[index])]
            for name in names:  # %.9g: float32 scores written back exactly
                cells += [f"{float(scored.scores[name][row]):.9g}", str(bool(flags[name][row]))]
            writer.writerow(cells)


def summary(
    detector: Detector, scored: ScoredImages, flags: dict[str, torch.Tensor], keep: float
) -> str:
    thresholds = detector.thresholds(keep)
    rows = [
        [
            name,
            f"{thresholds[name]:.6g}",
            f"{int(flags[name].sum())} ({100 * float(flags[name].float().mean()):.1f} %)",
            f"{float(scores.median()):.6g}",
        ]
        for name, scores in scored.scores.items()
    ]
    header = ["scorer", f"threshold (keeps {100 * keep:g} % of normal test)", "flagged OOD"]
    return markdown_table([*header, "median score"], rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        detector = Detector.load(args.detector, args.device)
        process_devices(detector.device, args.devices)  # enough GPUs: checked before any work
        groups = [image_paths([item]) for item in args.inputs]
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files = [path for group in groups for path in group]
    keep = detector.normal_keep if args.keep is None else args.keep
    start = time.perf_counter()
    scored = detector.score_images(
        files,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=not args.no_progress,
        group_sizes=[len(group) for group in groups],
        processes=args.devices,
    )
    seconds = time.perf_counter() - start
    for index, problem in sorted(scored.unreadable.items()):
        print(f"skipped {files[index]}: {problem}", file=sys.stderr)
    if not scored.indices:
        print(f"error: none of the {len(files)} files could be read", file=sys.stderr)
        return 1
    flags = detector.is_ood(scored.scores, keep)
    write_csv(args.output, files, scored, flags)
    skipped = f"; {len(scored.unreadable)} unreadable skipped" if scored.unreadable else ""
    print(
        f"Scored {len(scored.indices)} of {len(files)} images in {seconds:.1f} s on "
        f"{detector.device}{skipped} (higher = more anomalous):\n"
        f"{summary(detector, scored, flags, keep)}\nScores written to {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
