"""Hydra entry point: ``python -m ood_nolabels.train +experiment=<name> [overrides]``.

Builds the data, loggers and method from the composed config with ``hydra.utils.instantiate``,
runs the method (DN2, SCAN features, clustering only, ...), prints the OOD results table and
writes ``metrics.json`` and the resolved config into the run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ood_nolabels.runner import RunContext, build_loggers
from ood_nolabels.utils.results import epoch_auroc_table, results_table, write_metrics

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, float]:
    """Run the configured method and return its metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, output_dir)
    ctx = RunContext(cfg, instantiate(cfg.data), build_loggers(cfg))
    metrics = instantiate(cfg.method)(ctx)
    report(metrics, output_dir)
    return metrics


@rank_zero_only
def save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config_resolved.yaml", resolve=True)


@rank_zero_only
def report(metrics: dict[str, float], output_dir: Path) -> None:
    path = write_metrics(metrics, output_dir)
    clustering = {k: v for k, v in metrics.items() if k.startswith("cluster/")}
    if clustering:
        print("\nClustering of the normal training set (labels used for evaluation only):")
        print("\n".join(f"  {name}: {value:.4f}" for name, value in sorted(clustering.items())))
    print(f"\nOOD detection (%, OOD = positive class):\n{results_table(metrics)}\n")
    epochs = epoch_auroc_table(metrics)
    if epochs:
        print(f"AUROC of each epoch's model vs the weight-averaged model:\n{epochs}\n")
    log.info("metrics written to %s", path)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
