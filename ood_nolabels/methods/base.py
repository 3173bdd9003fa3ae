"""The interface every method implements, what a run returns, and the detector a run leaves.

A method is configured in its yaml (``conf/method/``) with its inputs wired (``backbone:
${backbone}``, ``pseudo_labels: ${pseudo_labels}``, ...) and built by
:func:`ood_nolabels.train.run` with ``hydra.utils.instantiate``; the entry point then calls
:meth:`Method.preflight` and :meth:`Method.run` with the run's
:class:`~ood_nolabels.engine.runtime.Runtime`, and knows nothing else about it.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ood_nolabels.core.eigengap import KChoice
from ood_nolabels.data.splits import NORMAL_TEST
from ood_nolabels.engine.evaluation import EvaluationResult
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.inference.detector import Detector
from ood_nolabels.models.backbones import Backbone


@dataclass
class RunResult:
    """A run's metrics (``metrics.json``) and, when it scored images, the final evaluation and
    the detector that reproduces its scores (saved as ``detector.pt`` in the run directory).

    ``num_clusters`` is the K the run used (the chosen one for ``K=auto``, whose curve is
    ``k_choice``). ``warnings`` are printed after the run's tables. For the diagnostic
    figures: ``train_labels`` are the pseudo-classes of the normal training images (when the
    method has them), ``reference_features`` the pretrained backbone's features of every split
    (when the method changed that backbone and kept them).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    evaluation: EvaluationResult | None = None
    detector: Detector | None = None
    train_labels: torch.Tensor | None = None
    reference_features: dict[str, torch.Tensor] | None = None
    num_clusters: int | None = None
    k_choice: KChoice | None = None
    warnings: list[str] = field(default_factory=list)


class Method(ABC):
    """One way to turn the run's data into OOD scores (or clusters)."""

    def preflight(self, runtime: Runtime) -> None:  # noqa: B027 - nothing to check by default
        """Everything checkable before the first stage trains (recipes, K against the data), so
        that what would fail late fails first. The data are already set up and checked."""

    @abstractmethod
    def run(self, runtime: Runtime) -> RunResult:
        """Train what the method trains and score or cluster the data."""


def plain(config: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A config node as plain containers (what the detector file stores)."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return copy.deepcopy(dict(config))


def build_detector(
    backbone: Backbone,
    backbone_config: DictConfig,
    result: EvaluationResult,
    scorer_configs: DictConfig,
    pseudo_labels: torch.Tensor | None = None,
    num_clusters: int | None = None,
    artifacts: Sequence[str] = (),
) -> Detector | None:
    """The detector of an evaluation ``result`` (None when no scorer succeeded): a copy of the
    scored ``backbone`` and the scorers the result fitted, which no later evaluation changes."""
    names = [name for name in scorer_configs if name in result.scorers]
    if not names:
        return None
    configs = plain(scorer_configs)
    return Detector(
        backbone=copy.deepcopy(backbone).cpu().eval(),
        backbone_config=plain(backbone_config),
        scorers={name: result.scorers[name] for name in names},
        scorer_configs={name: configs[name] for name in names},
        normal_test_scores={name: result.scores[name][NORMAL_TEST].clone() for name in names},
        pseudo_labels=None if pseudo_labels is None else torch.as_tensor(pseudo_labels).clone(),
        num_clusters=num_clusters,
        artifacts=list(artifacts),
    )
