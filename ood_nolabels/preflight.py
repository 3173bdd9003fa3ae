"""Checks that run before the first stage trains: what can fail late is tried first.

Each check takes the values it needs; :func:`ood_nolabels.train.run` calls them with the composed
config's parts before the method starts.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ood_nolabels.losses import check_min_cluster_fraction
from ood_nolabels.stages.base import check_num_clusters, takes_total_steps
from ood_nolabels.stages.scan import SCANModule
from ood_nolabels.stages.selflabel import SelfLabelModule
from ood_nolabels.stages.simclr import SimCLRModule

log = logging.getLogger(__name__)

MIN_IMAGES_PER_CLUSTER = 10
# The LightningModule that each clustering stage builds with ``**<stage>.module``.
STAGE_MODULES = {"simclr": SimCLRModule, "scan": SCANModule, "selflabel": SelfLabelModule}
# Their arguments that the stage code passes itself (from other config keys or its own objects).
PASSED_BY_THE_STAGE = frozenset(
    {"backbone", "model", "num_clusters", "neighbors", "optimizer", "scheduler", "batch_augment"}
)


def check_clusters_fit_the_data(num_clusters: int, num_images: int) -> None:
    """K must leave several images per cluster; more clusters than images can never work."""
    check_num_clusters(num_clusters)
    if num_clusters > num_images:
        raise ValueError(
            f"K={num_clusters} clusters but only {num_images} normal training images: choose "
            f"K <= {num_images // MIN_IMAGES_PER_CLUSTER} (at least {MIN_IMAGES_PER_CLUSTER} "
            "images per cluster)"
        )
    if num_clusters * MIN_IMAGES_PER_CLUSTER > num_images:
        log.warning(
            "K=%d clusters for %d normal training images leaves fewer than %d images per cluster",
            num_clusters,
            num_images,
            MIN_IMAGES_PER_CLUSTER,
        )


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


def check_stage_recipes(stages: Mapping[str, DictConfig]) -> None:
    """Build every stage's optimizer and scheduler on a dummy parameter, so a misspelt or
    unknown argument fails now instead of after the stages before it have trained."""
    for name, stage in stages.items():
        if stage is None or stage.get("optimizer") is None:
            continue
        try:
            optimizer = instantiate(stage.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
            if stage.get("scheduler") is not None:
                factory = instantiate(stage.scheduler)
                steps = {"total_steps": 10} if takes_total_steps(factory) else {}
                factory(optimizer=optimizer, **steps)
        except Exception as error:  # any construction error is a config error here
            raise ValueError(
                f"{name}: its optimizer or scheduler cannot be built from the config "
                f"({type(error).__name__}: {error}). Check the keys under {name}.optimizer and "
                f"{name}.scheduler."
            ) from error


def check_stage_modules(clustering: DictConfig) -> None:
    """Every ``clustering.<stage>.module`` key must be an argument of the stage's module, so a
    misspelt key fails now instead of when the stage starts after the ones before it trained."""
    for name, module_class in STAGE_MODULES.items():
        stage = clustering.get(name)
        if stage is None or stage.get("module") is None:
            continue
        accepted = set(inspect.signature(module_class).parameters) - PASSED_BY_THE_STAGE
        unknown = sorted(set(stage.module) - accepted)
        if unknown:
            raise ValueError(
                f"clustering.{name}.module: unknown key(s) {unknown}; {module_class.__name__} "
                f"takes {sorted(accepted)}"
            )
    selflabel = clustering.get("selflabel")
    if selflabel is not None and selflabel.get("module") is not None:
        check_min_cluster_fraction(selflabel.module.get("min_cluster_fraction", 0.0))
