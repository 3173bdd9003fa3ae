"""The run context: shared loggers, trainer construction, feature extraction and OOD evaluation.

Methods (DN2, SCAN features, pseudo-label finetuning) receive one :class:`RunContext` and compose
stages from it, so every stage uses the same trainer settings, loggers and data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ood_nolabels.data.datamodule import OODDataModule
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.scoring.evaluate import OODScoringModule
from ood_nolabels.scoring.features import FeatureExtractor
from ood_nolabels.utils.wandb_mode import use_offline_wandb_without_credentials

log = logging.getLogger(__name__)


def build_loggers(cfg: DictConfig) -> list[Logger]:
    if "wandb" in (cfg.get("logger") or {}):
        log.info("W&B mode: %s", use_offline_wandb_without_credentials())
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    for logger in loggers:  # the whole config, so ablations can be compared by any value
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


@dataclass
class RunContext:
    """Everything a method needs; built once per run by :func:`ood_nolabels.train.run`."""

    cfg: DictConfig
    datamodule: OODDataModule
    loggers: list[Logger] = field(default_factory=list)

    @property
    def artifact_dir(self) -> Path:
        return Path(self.cfg.paths.artifact_dir)

    def trainer(self, callbacks: Sequence[L.Callback] = (), **overrides) -> L.Trainer:
        """A trainer from the ``trainer`` config plus the run's loggers and callbacks."""
        configured = [instantiate(c) for c in (self.cfg.get("callbacks") or {}).values()]
        return instantiate(
            self.cfg.trainer,
            logger=self.loggers or False,
            callbacks=[*configured, *callbacks],
            **overrides,
        )

    def train_loader(self, dataset: Dataset, batch_size: int) -> DataLoader:
        """Shuffled training batches; the last partial batch is dropped when there are others."""
        return DataLoader(
            dataset,
            batch_size=min(batch_size, len(dataset)),
            shuffle=True,
            drop_last=len(dataset) > batch_size,
            num_workers=self.cfg.data.num_workers,
            persistent_workers=self.cfg.data.num_workers > 0,
        )

    def extract(
        self,
        model: nn.Module,
        transform: Callable[[Image.Image], torch.Tensor],
        splits: Sequence[str],
    ) -> dict[str, torch.Tensor]:
        """Outputs of ``model`` (features or logits) for whole splits, in dataset order."""
        extractor = FeatureExtractor(model, splits)
        loaders = [self.datamodule.loader(split, transform) for split in splits]
        self.trainer(enable_model_summary=False).test(extractor, loaders, verbose=False)
        if not extractor.features:
            raise RuntimeError(
                "features did not come back from the worker processes: training pipelines need "
                "trainer.strategy=ddp (or one device), not ddp_spawn"
            )
        return extractor.features

    def evaluate(
        self, backbone: Backbone, train_labels: torch.Tensor | None = None, prefix: str = "ood"
    ) -> dict[str, float]:
        """Score each OOD set with each configured scorer: ``<prefix>/<set>/<scorer>/<metric>``."""
        scorers = {name: instantiate(scorer) for name, scorer in self.cfg.scorer.items()}
        loaders = self.datamodule.eval_loaders(backbone.transform())
        module = OODScoringModule(
            backbone, list(loaders), self.datamodule.ood_names, scorers, train_labels, prefix
        )
        trainer = self.trainer(enable_model_summary=False)
        trainer.test(module, dataloaders=list(loaders.values()), verbose=False)
        return {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith(f"{prefix}/")
        }

    def fit(
        self,
        module: L.LightningModule,
        loader: DataLoader,
        epochs: int,
        directory: Path,
        callbacks: Sequence[L.Callback] = (),
    ) -> None:
        """Train one stage, resuming from ``directory/checkpoints/last.ckpt`` when a run was cut."""
        last = directory / "checkpoints" / "last.ckpt"
        # One file, overwritten at every epoch end (no monitor: the latest epoch is the one kept).
        checkpoint = ModelCheckpoint(
            dirpath=last.parent, filename=last.stem, save_top_k=1, enable_version_counter=False
        )
        if last.exists():
            log.info("resuming %s from %s", directory.name, last)
        trainer = self.trainer(
            callbacks=[checkpoint, *callbacks], max_epochs=epochs, default_root_dir=directory
        )
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader, ckpt_path=last if last.exists() else None)
        log.info("%s: trained in %.1f s", directory.name, time.perf_counter() - start)

    @staticmethod
    def save(obj: object, path: Path) -> None:
        """Write an artifact once (global rank 0); every rank waits until it exists."""
        if rank_zero_only.rank == 0:
            torch.save(obj, path)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Metrics computed outside a Lightning loop (clustering accuracy, ...) to every logger."""
        for logger in self.loggers:
            logger.log_metrics(metrics)
