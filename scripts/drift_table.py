"""Does a label-free feature-drift signal track what finetuning did to the kNN AUROC?

Reads the runs of ``scripts/fmnist_guard_dev.sh`` (one folder per run, each with metrics.json;
``dn2`` is the pretrained backbone) and prints, for every epoch's model and the averaged one, the
kNN AUROC, its change from the pretrained features, and the ``drift/...`` signals; then, per
signal, its Spearman correlation with that change and how well its threshold separates the
models that got worse from those that did not::

    python scripts/drift_table.py multirun_outputs/fmnist_guard_dev
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ood_nolabels.core.feature_drift import SIGNALS
from ood_nolabels.core.tables import markdown_table

SCOPE = re.compile(r"^(drift|ood)(_epoch(\d+))?/")


def knn_auroc(metrics: dict[str, float], scope: str) -> float:
    (value,) = [v for k, v in metrics.items() if k.startswith(f"{scope}/") and "/knn/auroc" in k]
    return value


def points(folder: Path, pretrained: float) -> list[dict]:
    """One row per scored model of the run in ``folder``."""
    metrics = json.loads((folder / "metrics.json").read_text())
    epochs = sorted({int(m.group(3)) for k in metrics if (m := SCOPE.match(k)) and m.group(3)})
    rows = []
    for epoch in [*epochs, None]:
        suffix = "" if epoch is None else f"_epoch{epoch}"
        auroc = knn_auroc(metrics, f"ood{suffix}")
        row = {"run": folder.name, "model": "averaged" if epoch is None else f"epoch {epoch}"}
        row |= {"auroc": auroc, "change": auroc - pretrained}
        row |= {s: metrics[f"drift{suffix}/{s}"] for s in SIGNALS}
        rows.append(row)
    return rows


def best_threshold(values: np.ndarray, worse: np.ndarray) -> tuple[float, float]:
    """The threshold ``t`` (warn when value < t) with the most models classified right."""
    candidates = np.concatenate([[values.min() - 1e-9], np.sort(values) + 1e-9])
    accuracy = [((values < t) == worse).mean() for t in candidates]
    best = int(np.argmax(accuracy))
    return float(candidates[best]), float(accuracy[best])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    pretrained = knn_auroc(json.loads((args.folder / "dn2" / "metrics.json").read_text()), "ood")
    runs = sorted(p.parent for p in args.folder.glob("*/metrics.json") if p.parent.name != "dn2")
    rows = [row for run in runs for row in points(run, pretrained)]
    print(f"pretrained features (DN2): kNN AUROC {100 * pretrained:.1f}\n")
    header = ["run", "model", "kNN AUROC", "change", *SIGNALS]
    table = [
        [r["run"], r["model"], f"{100 * r['auroc']:.1f}", f"{100 * r['change']:+.1f}"]
        + [f"{r[s]:.3f}" for s in SIGNALS]
        for r in rows
    ]
    print(markdown_table(header, table), "\n")
    change = np.array([r["change"] for r in rows])
    worse = change < 0
    summary = []
    for signal in SIGNALS:
        values = np.array([r[signal] for r in rows])
        rho = spearmanr(values, change).statistic
        threshold, accuracy = best_threshold(values, worse)
        summary.append([signal, f"{rho:+.2f}", f"{threshold:.3f}", f"{100 * accuracy:.0f} %"])
    header = ["signal", "Spearman with change", "best threshold", "models classified right"]
    print(markdown_table(header, summary))


if __name__ == "__main__":
    main()
