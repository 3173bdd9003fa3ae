"""What every method shares and none owns: the data, the trainer settings, loggers and artifacts.

:func:`ood_nolabels.train.run` builds one :class:`Runtime` per run and passes it to the method;
everything method-specific (backbone, stage recipes, scorers, K) comes in as the method's own
arguments, wired in the method's yaml.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from ood_nolabels.core.timings import Timings
from ood_nolabels.data.datamodule import OODDataModule
from ood_nolabels.engine.artifacts import ArtifactStore, CachedStage
from ood_nolabels.engine.extraction import FeatureExtractor
from ood_nolabels.engine.loggers import start_stage

log = logging.getLogger(__name__)

# Trainer settings that change what a stage learns or extracts, with the values that mean
# Lightning's default: any other value joins every stage's cache key (:func:`training_key`).
TRAINING_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "precision": (None, "32-true", "32", 32),
    "max_epochs": (None,),
    "limit_train_batches": (None, 1.0),
    "accumulate_grad_batches": (None, 1),
    "gradient_clip_val": (None, 0.0),
}


def training_key(trainer: DictConfig) -> dict[str, Any]:
    """The trainer settings of :data:`TRAINING_DEFAULTS` whose values are not the defaults.

    Empty for a default fp32 run, so its stage keys are those of the stages' own inputs alone.
    """
    settings = OmegaConf.to_container(trainer, resolve=True)
    return {
        name: settings[name]
        for name, defaults in TRAINING_DEFAULTS.items()
        if settings.get(name) not in defaults
    }


def check_trainer(trainer: DictConfig) -> None:
    """Trainer settings that cannot work on this machine or with these pipelines."""
    accelerator = str(trainer.get("accelerator", "auto"))
    strategy = str(trainer.get("strategy", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"trainer.accelerator={accelerator} but no CUDA GPU is visible. On a CPU machine use "
            "trainer=cpu, or trainer=ddp_cpu (or trainer.accelerator=cpu trainer.devices=2) for "
            "multi-process DDP on CPU."
        )
    if "spawn" in strategy:
        raise ValueError(
            f"trainer.strategy={strategy}: spawned workers cannot hand features or trained "
            "weights back to this process. Use trainer.strategy=ddp (trainer=ddp on GPUs, "
            "trainer=ddp_cpu on CPUs) or one device."
        )
    max_epochs = trainer.get("max_epochs")
    if max_epochs is not None and max_epochs < 1:
        raise ValueError(f"trainer.max_epochs={max_epochs}: a cap on every stage's epochs is >= 1")


@dataclass
class Runtime:
    """The run's shared resources.

    ``trainer`` and ``callbacks`` are the configs of the ``trainer`` and ``callbacks`` groups
    (a fresh Trainer is built for every stage); ``trainer.max_epochs``, when set, caps every
    stage's epochs (the ``debug`` configs). ``data_key`` identifies the normal training data in
    the stages' cache keys.
    """

    datamodule: OODDataModule
    artifacts: ArtifactStore
    trainer: DictConfig
    callbacks: Mapping[str, DictConfig] = field(default_factory=dict)
    loggers: list[Logger] = field(default_factory=list)
    data_key: Any = None
    timings: Timings = field(default_factory=Timings)

    def preflight(self) -> None:
        """What every run needs, checked before any method starts: the trainer settings and
        every data set present and readable."""
        check_trainer(self.trainer)
        self.datamodule.setup()

    def stage(self, name: str, *depends_on: Any) -> CachedStage:
        """A cached stage keyed by ``depends_on`` (and the run seed)."""
        return self.artifacts.stage(name, *depends_on)

    def epochs(self, epochs: int) -> int:
        """A stage's epochs under the trainer's ``max_epochs`` cap (none by default)."""
        cap = self.trainer.get("max_epochs")
        return epochs if cap is None else min(epochs, int(cap))

    def make_trainer(self, callbacks: Sequence[L.Callback] = (), **overrides) -> L.Trainer:
        """A trainer from the ``trainer`` config plus the run's loggers and callbacks."""
        configured = [instantiate(c) for c in self.callbacks.values()]
        return instantiate(
            self.trainer,
            logger=self.loggers or False,
            callbacks=[*configured, *callbacks],
            **overrides,
        )

    def extract(
        self, model: nn.Module, loaders: Mapping[str, DataLoader]
    ) -> dict[str, torch.Tensor]:
        """Outputs of ``model`` (features or logits) for whole splits, in dataset order."""
        # The default memory layout, as inside a fit: the same weights must give the same
        # features (and metrics) whether they are scored live or replayed from a file.
        extractor = FeatureExtractor(model, list(loaders))
        trainer = self.make_trainer(enable_model_summary=False)
        trainer.test(extractor, list(loaders.values()), verbose=False)
        if not extractor.features:
            raise RuntimeError(
                "features did not come back from the worker processes: training pipelines need "
                "trainer.strategy=ddp (or one device), not ddp_spawn"
            )
        return extractor.features

    def fit(
        self,
        module: L.LightningModule,
        loader: DataLoader,
        epochs: int,
        directory: Path,
        callbacks: Sequence[L.Callback] = (),
    ) -> None:
        """Train one stage for ``epochs`` (capped by :meth:`epochs`), resuming from
        ``directory/checkpoints/last.ckpt`` when a run was cut."""
        last = directory / "checkpoints" / "last.ckpt"
        # One file, overwritten at every epoch end (no monitor: the latest epoch is the one kept).
        checkpoint = ModelCheckpoint(
            dirpath=last.parent, filename=last.stem, save_top_k=1, enable_version_counter=False
        )
        if last.exists():
            log.info("resuming %s from %s", directory.name, last)
        start_stage(self.loggers, getattr(module, "stage_name", directory.name))
        trainer = self.make_trainer(
            callbacks=[checkpoint, *callbacks],
            max_epochs=self.epochs(epochs),
            default_root_dir=directory,
        )
        trainer.fit(module, train_dataloaders=loader, ckpt_path=last if last.exists() else None)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Metrics computed outside a Lightning loop (clustering accuracy, ...) to every logger."""
        if metrics:
            for logger in self.loggers:
                logger.log_metrics(dict(metrics), step=step)
