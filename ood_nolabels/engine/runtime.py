"""What every method shares and none owns: the data, the trainer settings, loggers and artifacts.

:func:`ood_nolabels.train.run` builds one :class:`Runtime` per run and passes it to the method;
everything method-specific (backbone, stage recipes, scorers, K) comes in as the method's own
arguments, wired in the method's yaml.
"""

from __future__ import annotations

import logging
import os
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
from ood_nolabels.data.sampling import EpochShuffle
from ood_nolabels.data.splits import NORMAL_TRAIN
from ood_nolabels.engine.artifacts import ArtifactStore, CachedStage
from ood_nolabels.engine.extraction import FeatureExtractor
from ood_nolabels.engine.loggers import start_stage

log = logging.getLogger(__name__)

MIN_NORMAL_IMAGES = 10

# Trainer settings that change what a stage learns or extracts, with the values that mean
# Lightning's default: any other value joins every stage's cache key (:func:`training_key`).
TRAINING_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "precision": (None, "32-true", "32", 32),
    "max_epochs": (None,),
    "limit_train_batches": (None, 1.0),
    "accumulate_grad_batches": (None, 1),
    "gradient_clip_val": (None, 0.0),
}


def world_size(trainer: DictConfig) -> int:
    """How many processes train: devices per node (``auto`` / -1: every visible GPU, one process
    on a CPU) times nodes, as Lightning counts them."""
    devices = trainer.get("devices", "auto")
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if isinstance(devices, int) and devices > 0:
        count = devices
    elif isinstance(devices, Sequence) and not isinstance(devices, str):
        count = len(devices)
    else:
        accelerator = str(trainer.get("accelerator", "auto"))
        gpus = torch.cuda.device_count() if accelerator in ("gpu", "cuda", "auto") else 0
        count = max(gpus, 1)
    return count * int(trainer.get("num_nodes") or 1)


def launch_rank(trainer: DictConfig, environ: Mapping[str, str] = os.environ) -> int | None:
    """This process's global rank as a cluster launch announces it, before any Trainer exists.

    Lightning guesses the rank at import from ``RANK``, ``LOCAL_RANK`` or ``SLURM_PROCID``, which
    makes the first process of every node beyond the first believe it is global rank 0 when the
    launch says only ``NODE_RANK`` (or ``GROUP_RANK``) and ``LOCAL_RANK``, as Lightning's own
    multi-node launch and its general cluster environment do. Until the first ``fit`` such a
    process would write the run directory and take the artifact locks that rank 0 holds. The rank
    here is Lightning's formula: node rank x processes per node + local rank. ``None`` when no
    node rank is given (then Lightning's guess is right) or ``RANK`` names the rank itself.
    """
    node = environ.get("NODE_RANK", environ.get("GROUP_RANK"))
    if node is None or "RANK" in environ:
        return None
    per_node = world_size(trainer) // int(trainer.get("num_nodes") or 1)
    return int(node) * per_node + int(environ.get("LOCAL_RANK", 0))


def claim_launch_rank(trainer: DictConfig) -> None:
    """Make ``rank_zero_only`` (every rank-0-only write, the artifact locks) follow
    :func:`launch_rank` from the start of the run."""
    rank = launch_rank(trainer)
    if rank is not None:
        rank_zero_only.rank = rank


def training_key(trainer: DictConfig) -> dict[str, Any]:
    """The trainer settings of :data:`TRAINING_DEFAULTS` whose values are not the defaults, and
    the number of training processes when it is not 1 (SimCLR's negatives, BatchNorm's batches
    and the global batch depend on it).

    Empty for a default fp32 run on one process, so its stage keys are those of the stages' own
    inputs alone.
    """
    settings = OmegaConf.to_container(trainer, resolve=True)
    key = {
        name: settings[name]
        for name, defaults in TRAINING_DEFAULTS.items()
        if settings.get(name) not in defaults
    }
    processes = world_size(trainer)
    return key | ({"world_size": processes} if processes != 1 else {})


def loader_key(data: DictConfig) -> dict[str, int]:
    """The number of loader workers, when there are any: each worker draws its augmentations
    from a stream of its own (seeded by ``seed_everything(workers=True)``), so the count changes
    the views a stage trains on. Empty for the main-process loading of the CPU presets."""
    workers = int(data.get("num_workers") or 0)
    return {"num_workers": workers} if workers > 0 else {}


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
    stage's epochs (the ``debug`` configs). :attr:`data_key` identifies the normal training
    images in the stages' cache keys.
    """

    datamodule: OODDataModule
    artifacts: ArtifactStore
    trainer: DictConfig
    callbacks: Mapping[str, DictConfig] = field(default_factory=dict)
    loggers: list[Logger] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)

    @property
    def num_normal_images(self) -> int:
        """How many normal training images the run has: every per-image artifact has as many
        rows."""
        return len(self.datamodule.images[NORMAL_TRAIN])

    @property
    def data_key(self) -> dict[str, str]:
        """The normal training images as a stage key: their fingerprint (their content, not
        their path), so the same images anywhere reuse a stage and changed images retrain it."""
        return {"normal_train": self.datamodule.fingerprint(NORMAL_TRAIN)}

    def preflight(self) -> None:
        """What every run needs, checked before any method starts: the trainer settings, every
        data set present and readable, and enough normal training images to describe the normal
        data at all."""
        check_trainer(self.trainer)
        self.datamodule.setup()
        count = self.num_normal_images
        if count < MIN_NORMAL_IMAGES:
            raise ValueError(
                f"only {count} normal training image(s): a detector needs at least "
                f"{MIN_NORMAL_IMAGES} to describe the normal data (the kNN bank and the "
                "Mahalanobis statistics are fitted on them); add normal training images"
            )

    def stage(self, name: str, *depends_on: Any) -> CachedStage:
        """A cached stage keyed by ``depends_on`` (and the run seed)."""
        return self.artifacts.stage(name, *depends_on)

    def epochs(self, epochs: int) -> int:
        """A stage's epochs under the trainer's ``max_epochs`` cap (none by default)."""
        cap = self.trainer.get("max_epochs")
        return epochs if cap is None else min(epochs, int(cap))

    def batch_limit(self, steps_per_epoch: int | None) -> dict[str, int]:
        """The trainer override for a stage's ``steps_per_epoch``: none when there is none or
        the trainer config's integer ``limit_train_batches`` already stops epochs sooner
        (``debug=tiny``)."""
        if steps_per_epoch is None:
            return {}
        configured = self.trainer.get("limit_train_batches")
        if isinstance(configured, int) and configured <= steps_per_epoch:
            return {}
        return {"limit_train_batches": steps_per_epoch}

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
        steps_per_epoch: int | None = None,
    ) -> None:
        """Train one stage for ``epochs`` (capped by :meth:`epochs`), resuming from
        ``directory/checkpoints/last.ckpt`` when a run was cut. A loader whose sampler is an
        :class:`~ood_nolabels.data.sampling.EpochShuffle` reads the trainer's epoch, so each
        epoch's batches and random stream are its own and a resumed run ends as an
        uninterrupted one. ``steps_per_epoch`` ends each epoch after that many batches (the
        first of the epoch's shuffle, so each epoch trains on another random part of the data;
        a smaller ``trainer.limit_train_batches`` still wins)."""
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
            **self.batch_limit(steps_per_epoch),
        )
        if isinstance(loader.sampler, EpochShuffle):
            loader.sampler.epoch = lambda: trainer.current_epoch
        trainer.fit(module, train_dataloaders=loader, ckpt_path=last if last.exists() else None)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Metrics computed outside a Lightning loop (clustering accuracy, ...) to every logger."""
        if metrics:
            for logger in self.loggers:
                logger.log_metrics(dict(metrics), step=step)
