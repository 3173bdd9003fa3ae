"""Building the OOD evaluation for a model, and scoring a model outside a fit."""

from __future__ import annotations

from functools import partial

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from ood_nolabels.models.backbones import Backbone
from ood_nolabels.runtime import Runtime
from ood_nolabels.scoring.evaluation import EvaluationResult, OODEvaluation


def build_evaluation(
    runtime: Runtime,
    backbone: Backbone,
    scorers: DictConfig,
    train_labels: torch.Tensor | None = None,
    every_n_epochs: int | None = None,
) -> OODEvaluation:
    """The evaluation callback for ``backbone``: every split through its preprocessing and the
    configured ``scorers`` (the ``scorer`` group)."""
    loaders = runtime.datamodule.eval_loaders(backbone.transform())
    return OODEvaluation(
        {name: instantiate(scorer) for name, scorer in scorers.items()},
        loaders,
        train_labels,
        every_n_epochs,
        runtime.loggers,
        runtime.timings,
    )


def evaluate_model(
    runtime: Runtime, evaluation: OODEvaluation, model: nn.Module, epoch: int | None = None
) -> EvaluationResult:
    """Score ``model`` with ``evaluation`` outside a fit (features from a DDP-safe test loop)."""
    return evaluation.score_model(partial(runtime.extract, model, evaluation.loaders), epoch=epoch)
