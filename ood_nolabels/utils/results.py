"""Results files and the printed table of a run."""

from __future__ import annotations

import json
from pathlib import Path

from ood_nolabels.scoring.metrics import METRICS

HEADERS = {"auroc": "AUROC", "fpr95": "FPR@95TPR", "aupr_in": "AUPR-In", "aupr_out": "AUPR-Out"}


def results_table(metrics: dict[str, float], prefix: str = "ood") -> str:
    """One row per (OOD set, scorer), metrics in percent; OOD is the positive class."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for name, value in metrics.items():
        parts = name.split("/")
        if len(parts) == 4 and parts[0] == prefix and parts[3] in METRICS:
            rows.setdefault((parts[1], parts[2]), {})[parts[3]] = value
    if not rows:
        return f"(no {prefix}/ metrics)"
    header = ["OOD set", "scorer", *(HEADERS[m] for m in METRICS)]
    lines = [
        [ood_set, scorer, *(f"{100 * values[m]:.1f}" if m in values else "-" for m in METRICS)]
        for (ood_set, scorer), values in sorted(rows.items())
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return (
            "| "
            + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            + " |"
        )

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(header), separator, *(fmt(line) for line in lines)])


def epoch_auroc_table(metrics: dict[str, float]) -> str:
    """AUROC (%) of each epoch's model, their mean, and the weight-averaged model."""
    prefixes = {name.split("/")[0].removeprefix("ood_epoch") for name in metrics}
    epochs = sorted(int(p) for p in prefixes if p.isdigit())
    rows = sorted(
        name.removeprefix("ood/").removesuffix("/auroc")
        for name in metrics
        if name.startswith("ood/") and name.endswith("/auroc")
    )
    if not epochs or not rows:
        return ""
    header = "| OOD set / scorer | " + " | ".join(f"epoch {e}" for e in epochs)
    header += " | epoch mean | averaged |"
    lines = [header, "|" + "---|" * (len(epochs) + 3)]
    for row in rows:
        cells = [metrics.get(f"ood_epoch{e}/{row}/auroc") for e in epochs]
        cells += [metrics.get(f"ood_epoch_mean/{row}/auroc"), metrics[f"ood/{row}/auroc"]]
        lines.append(
            f"| {row} | " + " | ".join("-" if c is None else f"{100 * c:.1f}" for c in cells) + " |"
        )
    return "\n".join(lines)


def write_metrics(metrics: dict[str, float], output_dir: str | Path) -> Path:
    """``metrics.json`` in the run directory, sorted for easy diffing."""
    path = Path(output_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")
    return path
