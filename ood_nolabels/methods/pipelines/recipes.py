"""Stage recipes (config nodes) turned into objects, and checked before the first stage trains.

A recipe that cannot work fails in a method's preflight, not after the stages before it trained.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ood_nolabels.core.losses import check_min_cluster_fraction
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.models.precomputed import PrecomputedFeatures
from ood_nolabels.modules.base import takes_total_steps
from ood_nolabels.modules.scan import SCANModule
from ood_nolabels.modules.selflabel import SelfLabelModule
from ood_nolabels.modules.simclr import SimCLRModule

# The LightningModule that each stage-1 stage builds with ``**<stage>.module``.
STAGE_MODULES = {"simclr": SimCLRModule, "scan": SCANModule, "selflabel": SelfLabelModule}
# Their arguments that the stage code passes itself (from other config keys or its own objects).
PASSED_BY_THE_STAGE = frozenset(
    {"backbone", "model", "num_clusters", "neighbors", "optimizer", "scheduler", "batch_augment"}
)


def augmentation_for(config: DictConfig | None, encoder: Backbone | PrecomputedFeatures):
    """Instantiate an augmentation partial for the backbone's input size and statistics.

    ``None`` is the encoder's own evaluation preprocessing (the un-augmented view); cached feature
    vectors (:class:`~ood_nolabels.models.precomputed.PrecomputedFeatures`) are never augmented.
    """
    if config is None or isinstance(encoder, PrecomputedFeatures):
        return encoder.transform()
    return instantiate(config)(image_size=encoder.image_size, mean=encoder.mean, std=encoder.std)


def check_stage_recipes(stages: Mapping[str, DictConfig]) -> None:
    """Every stage trains for an integer number of epochs >= 1 (and ``steps_per_epoch`` >= 1
    batches where given), with a batch size >= 1, and its optimizer and scheduler build on a
    dummy parameter, so a misspelt or unknown argument fails now instead of after the stages
    before it have trained."""
    for name, stage in stages.items():
        if stage is None:
            continue
        for key in ("epochs", "batch_size", "steps_per_epoch"):
            value = stage.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name}.{key}={value!r}: an integer >= 1")
            if value is not None and value < 1:
                raise ValueError(
                    f"{name}.{key}={value}: a stage trains for at least 1 epoch of at least 1 "
                    f"batch of at least 1 image; set {name}.{key} >= 1"
                )
        if stage.get("optimizer") is None:
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


def check_stage_modules(recipe: DictConfig) -> None:
    """Every ``stage1.<stage>.module`` key must be an argument of the stage's module, so a
    misspelt key fails now instead of when the stage starts after the ones before it trained."""
    for name, module_class in STAGE_MODULES.items():
        stage = recipe.get(name)
        if stage is None or stage.get("module") is None:
            continue
        accepted = set(inspect.signature(module_class).parameters) - PASSED_BY_THE_STAGE
        unknown = sorted(set(stage.module) - accepted)
        if unknown:
            raise ValueError(
                f"stage1.{name}.module: unknown key(s) {unknown}; {module_class.__name__} "
                f"takes {sorted(accepted)}"
            )
    selflabel = recipe.get("selflabel")
    if selflabel is not None and selflabel.get("module") is not None:
        check_min_cluster_fraction(selflabel.module.get("min_cluster_fraction", 0.0))
