"""What a run leaves for people: the printed tables, ``metrics.json`` and ``scores.csv``."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ood_nolabels.scoring.keys import EPOCH, EPOCH_MEAN, FINAL, ood_metrics_of
from ood_nolabels.scoring.metrics import METRICS

if TYPE_CHECKING:  # the evaluation reports its timings through this module's tables
    from ood_nolabels.data.images import LabeledImages
    from ood_nolabels.scoring.evaluation import EvaluationResult

HEADERS = {"auroc": "AUROC", "fpr95": "FPR@95TPR", "aupr_in": "AUPR-In", "aupr_out": "AUPR-Out"}


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


def results_table(metrics: dict[str, float], scope: str = FINAL) -> str:
    """One row per (OOD set, scorer), metrics in percent; OOD is the positive class."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in ood_metrics_of(metrics).items():
        if key.scope == scope and key.metric in METRICS:
            rows.setdefault((key.ood_set, key.scorer), {})[key.metric] = value
    if not rows:
        return f"(no {scope}/ metrics)"
    header = ["OOD set", "scorer", *(HEADERS[m] for m in METRICS)]
    lines = [
        [ood_set, scorer, *(percent(values.get(m)) for m in METRICS)]
        for (ood_set, scorer), values in sorted(rows.items())
    ]
    return markdown_table(header, lines)


def epoch_auroc_table(metrics: dict[str, float]) -> str:
    """AUROC (%) of each epoch's model, their mean, and the weight-averaged model."""
    keys = ood_metrics_of(metrics)
    aurocs = {key: value for key, value in keys.items() if key.metric == "auroc"}
    epochs = sorted({key.epoch for key in aurocs if key.scope == EPOCH})
    rows = sorted(key for key in aurocs if key.scope == FINAL)
    if not epochs or not rows:
        return ""
    header = ["OOD set / scorer", *(f"epoch {e}" for e in epochs), "epoch mean", "averaged"]
    lines = []
    for key in rows:
        cells = [aurocs.get(key.at(EPOCH, e)) for e in epochs]
        cells += [aurocs.get(key.at(EPOCH_MEAN)), aurocs[key]]
        lines.append([f"{key.ood_set} / {key.scorer}", *(percent(c) for c in cells)])
    return markdown_table(header, lines)


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
