"""Hydra entry point: ``python -m ood_nolabels.train +experiment=<name> [overrides]``.

Builds every object from the composed config with ``hydra.utils.instantiate``, extracts features
with the configured backbone, scores each OOD set with each scorer, logs the metrics to the
configured loggers and writes ``metrics.json`` and the resolved config into the run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ood_nolabels.data.datamodule import OODDataModule
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.scoring.evaluate import OODScoringModule
from ood_nolabels.utils.results import results_table, write_metrics
from ood_nolabels.utils.wandb_mode import use_offline_wandb_without_credentials

log = logging.getLogger(__name__)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Lightning trainer with the configured loggers and callbacks."""
    if "wandb" in (cfg.get("logger") or {}):
        mode = use_offline_wandb_without_credentials()
        log.info("W&B mode: %s", mode)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)


def evaluate(
    trainer: L.Trainer, backbone: Backbone, datamodule: OODDataModule, cfg: DictConfig
) -> dict[str, float]:
    """Score every OOD set with every configured scorer; returns ``ood/<set>/<scorer>/<metric>``."""
    scorers = {name: instantiate(scorer) for name, scorer in cfg.scorer.items()}
    loaders = datamodule.eval_loaders(backbone.transform())
    module = OODScoringModule(backbone, list(loaders), datamodule.ood_names, scorers)
    trainer.test(module, dataloaders=list(loaders.values()), verbose=False)
    return {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if name.startswith("ood/")
    }


def run(cfg: DictConfig) -> dict[str, float]:
    """Run the configured pipeline and return its metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, output_dir)
    datamodule: OODDataModule = instantiate(cfg.data)
    backbone: Backbone = instantiate(cfg.backbone)
    trainer = build_trainer(cfg)
    metrics = evaluate(trainer, backbone, datamodule, cfg)
    report(metrics, output_dir)
    return metrics


@rank_zero_only
def save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config_resolved.yaml", resolve=True)


@rank_zero_only
def report(metrics: dict[str, float], output_dir: Path) -> None:
    path = write_metrics(metrics, output_dir)
    print(f"\nOOD detection (%, OOD = positive class):\n{results_table(metrics)}\n")
    log.info("metrics written to %s", path)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
