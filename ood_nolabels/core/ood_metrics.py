"""The one place OOD metrics are computed.

Convention: a higher score means more anomalous and OOD samples are the positive class.
AUROC, FPR@95TPR and AUPR-Out use OOD as positive; AUPR-In treats normal samples as positive
(scores negated). FPR@95TPR is the fraction of normal test samples flagged at the threshold that
detects 95 % of the OOD samples.

torchmetrics applies a sigmoid to scores outside [0, 1], which saturates raw distances (many of
them map to exactly 1.0) and corrupts the ranking. Scores are therefore replaced by their dense
ranks scaled into [0, 1] first: every metric here depends only on the order of the scores and
on their ties, both of which the rank transform keeps exactly.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_roc,
)


def rank_scale(scores: torch.Tensor) -> torch.Tensor:
    """Dense ranks in [0, 1]: the order and ties of ``scores``, safe from torchmetrics' sigmoid."""
    unique, ranks = torch.unique(scores, sorted=True, return_inverse=True)
    return ranks.double() / max(len(unique) - 1, 1)


def _labelled(normal_scores, ood_scores) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-scaled scores of both sets and their labels (OOD = 1), after checking them."""
    normal_scores = torch.as_tensor(normal_scores, dtype=torch.float64).flatten()
    ood_scores = torch.as_tensor(ood_scores, dtype=torch.float64).flatten()
    if len(normal_scores) == 0 or len(ood_scores) == 0:
        raise ValueError("need at least one normal and one OOD score")
    scores = torch.cat([normal_scores, ood_scores])
    if not torch.isfinite(scores).all():
        raise ValueError("anomaly scores contain NaN or inf; check the features and the scorer")
    is_ood = torch.cat(
        [
            torch.zeros(len(normal_scores), dtype=torch.long),
            torch.ones(len(ood_scores), dtype=torch.long),
        ]
    )
    return rank_scale(scores), is_ood


def roc_points(normal_scores, ood_scores) -> tuple[torch.Tensor, torch.Tensor]:
    """False- and true-positive rates of every threshold (OOD = positive), for ROC plots."""
    ranked, is_ood = _labelled(normal_scores, ood_scores)
    fpr, tpr, _ = binary_roc(ranked, is_ood)
    return fpr, tpr


def ood_metrics(normal_scores: torch.Tensor, ood_scores: torch.Tensor) -> dict[str, float]:
    """AUROC, FPR@95TPR, AUPR-In and AUPR-Out (fractions in [0, 1])."""
    ranked, is_ood = _labelled(normal_scores, ood_scores)
    fpr, tpr, _ = binary_roc(ranked, is_ood)
    return {
        "auroc": float(binary_auroc(ranked, is_ood)),
        "fpr95": float(fpr[torch.searchsorted(tpr, torch.tensor(0.95, dtype=tpr.dtype))]),
        "aupr_in": float(binary_average_precision(1.0 - ranked, 1 - is_ood)),
        "aupr_out": float(binary_average_precision(ranked, is_ood)),
    }
