"""The methods a run can execute, one file each, selected with the ``method`` config group.

A method is configured as a Hydra partial with its inputs wired in its yaml (``backbone:
${backbone}``, ``num_clusters: ${K}``, ...) and called by :func:`ood_nolabels.train.run` as
``method(runtime)``; it returns a :class:`RunResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ood_nolabels.detector import Detector
from ood_nolabels.scoring.evaluation import EvaluationResult


@dataclass
class RunResult:
    """A run's metrics (``metrics.json``) and, when it scored images, the final evaluation and
    the detector that reproduces its scores (saved as ``detector.pt`` in the run directory).

    For the diagnostic figures: ``train_labels`` are the pseudo-classes of the normal training
    images (when the method has them), ``reference_features`` the pretrained backbone's features
    of every split (when the method changed that backbone and kept them).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    evaluation: EvaluationResult | None = None
    detector: Detector | None = None
    train_labels: torch.Tensor | None = None
    reference_features: dict[str, torch.Tensor] | None = None
