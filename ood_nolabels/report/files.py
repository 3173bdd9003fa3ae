"""The files a run leaves for people and programs: ``metrics.json`` and ``scores.csv``."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path

from ood_nolabels.data.images import LabeledImages
from ood_nolabels.engine.evaluation import EvaluationResult


def write_metrics(metrics: dict[str, float], output_dir: str | Path) -> Path:
    """``metrics.json`` in the run directory, sorted for easy diffing."""
    path = Path(output_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")
    return path


def write_scores(
    evaluation: EvaluationResult, images: Mapping[str, LabeledImages], output_dir: Path
) -> Path:
    """``scores.csv``: one row per scored image and scorer: ``image`` (the file, or
    ``<split>/<index>`` for in-memory images), split, index in the split, scorer, score."""
    path = output_dir / "scores.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "split", "index", "scorer", "score"])
        for scorer, splits in evaluation.scores.items():
            for split, scores in splits.items():
                files = images[split].files()
                writer.writerows(
                    (files[i] if files else f"{split}/{i}", split, i, scorer, f"{s:.8g}")
                    for i, s in enumerate(scores.tolist())
                )
    return path
