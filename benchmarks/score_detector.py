"""Scoring speed of a saved detector vs bare feature extraction + kNN on the same image files.

Writes ``--images`` digits (normal and OOD test images, then training images, repeated as needed)
as PNG files, then times, best of ``--repeats``:
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
from ood_nolabels.detector import Detector


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


def best_of(repeats: int, fn, *args) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


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
        bare_time, bare_scores = best_of(args.repeats, bare, detector, paths, args.batch_size)
        knn_time, knn_scores = best_of(args.repeats, score, knn_only, paths)
        all_time, _ = best_of(args.repeats, score, detector, paths)
    torch.testing.assert_close(knn_scores, bare_scores, rtol=1e-4, atol=1e-5)
    print(
        f"{args.images} digit PNGs at {detector.backbone.image_size} px, batch {args.batch_size}, "
        f"best of {args.repeats}, {torch.get_num_threads()} threads; detector loaded in "
        f"{load_time:.2f} s"
    )
    print(f"  bare extraction + faiss kNN : {bare_time:6.2f} s")
    print(f"  detector, kNN               : {knn_time:6.2f} s ({knn_time / bare_time:.2f}x bare)")
    names = "+".join(detector.scorers)
    print(f"  detector, {names:17s} : {all_time:6.2f} s ({all_time / bare_time:.2f}x bare)")


if __name__ == "__main__":
    main()
