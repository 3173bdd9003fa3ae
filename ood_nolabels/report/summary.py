"""What a finished run leaves: ``metrics.json``, ``scores.csv``, ``detector.pt``, the figures, and
the tables printed on the console."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from ood_nolabels.core.tables import epoch_auroc_table, results_table
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.inference.detector import DETECTOR_FILE
from ood_nolabels.methods.base import RunResult
from ood_nolabels.report.figures import write_diagnostics
from ood_nolabels.report.files import write_metrics, write_scores

log = logging.getLogger(__name__)


@rank_zero_only
def save_detector(result: RunResult, config: dict[str, Any], output_dir: Path) -> None:
    """``detector.pt``: the run's backbone, fitted scorers, thresholds, config and metrics."""
    if result.detector is not None:
        result.detector.config = config
        result.detector.metrics = dict(result.metrics)
        path = result.detector.save(output_dir / DETECTOR_FILE)
        source = ", ".join(result.detector.artifacts) or "the pretrained weights"
        log.info(
            "detector from %s written to %s (score images: ood-score %s <images>)",
            source,
            path,
            path,
        )


@rank_zero_only
def report(
    result: RunResult, runtime: Runtime, plots: Mapping, output_dir: Path, seed: int
) -> None:
    """``metrics.json``, ``scores.csv``, the figures (``plots`` settings), and the tables."""
    metrics = result.metrics
    path = write_metrics(
        metrics | ({"detector": DETECTOR_FILE} if result.detector else {}), output_dir
    )
    if result.evaluation is not None:
        write_scores(result.evaluation, runtime.datamodule.images, output_dir)
    with runtime.timings.measure("figures", "drawn"):
        write_diagnostics(
            result, runtime.datamodule, plots, output_dir / "plots", runtime.loggers, seed=seed
        )
    clustering = {k: v for k, v in metrics.items() if k.startswith("cluster/")}
    if clustering:
        print("\nClustering of the normal training set (labels used for evaluation only):")
        print("\n".join(f"  {name}: {value:.4f}" for name, value in sorted(clustering.items())))
    print(f"\nOOD detection (%, OOD = positive class):\n{results_table(metrics)}\n")
    epochs = epoch_auroc_table(metrics)
    if epochs:
        print(
            "AUROC of each epoch's model vs the weight-averaged model, and how far their "
            f"features moved from the pretrained ones (1 = not at all):\n{epochs}\n"
        )
    print(f"Time (s):\n{runtime.timings.table()}\n")
    for warning in result.warnings:
        print(f"WARNING: {warning}\n")
    log.info("results in %s (metrics.json, scores.csv, plots/)", path.parent)
