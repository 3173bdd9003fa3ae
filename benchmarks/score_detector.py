"""Scoring speed of a saved detector vs bare feature extraction + kNN on the same image files.

Writes ``--images`` digits (normal and OOD test images, then training images, repeated as needed)
as PNG files, then times, best of ``--repeats`` interleaved runs:
  * bare: read each file with PIL, the backbone's transform, batched forward passes in
    ``torch.inference_mode``, L2-normalise, one faiss search of the detector's kNN bank;
  * detector: ``Detector.score_images`` with the kNN scorer alone (the same work, through the
    detector's loader, unreadable-file handling and scorer), and with all of its scorers.
Prints the times and the ratio detector / bare (the kNN-only ratio is the one to compare).
Usage: python benchmarks/score_detector.py <run dir or detector.pt> [--images 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import torch
import torch.nn.functional as F
from PIL import Image

from ood_nolabels.data.digits import DigitsSource
from ood_nolabels.inference.detector import Detector


def write_digits(directory: Path, count: int) -> list[Path]:
    """``count`` digits as 8-bit grayscale PNG files."""
    source = DigitsSource()
    images = [source.load("test"), source.load("train")]
    pool = [split.get_image(i) for split in images for i in range(len(split))]
    paths = []
    for i in range(count):
        paths.append(directory / f"{i:05d}.png")
        pool[i % len(pool)].save(paths[-1])
    return paths


def bare(detector: Detector, paths: list[Path], batch_size: int) -> torch.Tensor:
    """Feature extraction + kNN (cosine, k=1) with nothing but PIL, torch and faiss."""
    backbone, transform = detector.backbone.eval(), detector.backbone.transform()
    bank = detector.scorers["knn"].state_dict()["bank"]
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank.numpy())
    with torch.inference_mode():
        features = torch.cat(
            [
                backbone(torch.stack([transform(Image.open(p)) for p in paths[i : i + batch_size]]))
                for i in range(0, len(paths), batch_size)
            ]
        )
    similarity, _ = index.search(F.normalize(features, dim=1).numpy(), 1)
    return 1.0 - torch.from_numpy(similarity[:, 0])


def timed(fn, *args) -> tuple[float, float, object]:
    """Wall-clock seconds, CPU seconds of this process, and the result of ``fn(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("detector", type=Path, help="a run directory or its detector.pt")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    detector = Detector.load(args.detector, device="cpu")
    load_time = time.perf_counter() - start
    knn_only = Detector(**{**vars(detector), "scorers": {"knn": detector.scorers["knn"]}})

    def score(which: Detector, paths: list[Path]) -> torch.Tensor:
        return which.score_images(paths, batch_size=args.batch_size).scores["knn"]

    with tempfile.TemporaryDirectory() as directory:
        paths = write_digits(Path(directory), args.images)
        score(knn_only, paths[: args.batch_size])  # warm-up: first-call allocations
        runs = {
            "bare extraction + faiss kNN": (bare, detector, paths, args.batch_size),
            "detector, kNN": (score, knn_only, paths),
            f"detector, {' + '.join(detector.scorers)}": (score, detector, paths),
        }
        times = {name: [] for name in runs}
        results = {}
        for _ in range(args.repeats):  # interleaved, so a busy moment hits all three alike
            for name, (fn, *fn_args) in runs.items():
                wall, cpu, results[name] = timed(fn, *fn_args)
                times[name].append((wall, cpu))
    bare_scores, knn_scores = results["bare extraction + faiss kNN"], results["detector, kNN"]
    torch.testing.assert_close(knn_scores, bare_scores, rtol=1e-4, atol=1e-5)
    print(
        f"{args.images} digit PNGs at {detector.backbone.image_size} px, batch {args.batch_size}, "
        f"best of {args.repeats}, {torch.get_num_threads()} threads; detector loaded in "
        f"{load_time:.2f} s. Times: wall clock, and CPU time of this process (steadier when "
        "other processes share the cores)"
    )
    base_wall, base_cpu = (min(t[i] for t in times["bare extraction + faiss kNN"]) for i in (0, 1))
    for name, measured in times.items():
        wall, cpu = min(t[0] for t in measured), min(t[1] for t in measured)
        print(
            f"  {name:30s}: wall {wall:6.2f} s ({wall / base_wall:.2f}x bare), "
            f"CPU {cpu:6.2f} s ({cpu / base_cpu:.2f}x bare)"
        )


if __name__ == "__main__":
    main()
