"""How far a finetuned backbone's features moved from the pretrained ones, without OOD data.

Finetuning on a few classes can deteriorate pretrained features (PANDA, Reiss et al. 2021): the
features collapse onto the class directions and lose what tells an unseen class from a seen one.
These signals compare the features of the same normal images under the finetuned and the
pretrained backbone, so they need neither OOD images nor labels:

- ``effective_rank``: exp of the entropy of the normalised covariance spectrum (Roy & Vetterli
  2007) of the L2-normalised features; collapse onto K class directions drives it towards K.
- ``neighbour_overlap``: the mean fraction of each image's ``k`` nearest neighbours (cosine)
  that stay its neighbours; the kNN scorer sees the feature space through exactly these.
- ``linear_cka``: linear centred kernel alignment (Kornblith et al. 2019) between the two.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ood_nolabels.core.search import ExactIndex

SIGNALS = ("effective_rank_ratio", "neighbour_overlap", "linear_cka")


def effective_rank(features: torch.Tensor) -> float:
    """exp(entropy) of the eigenvalue distribution of the covariance of the normalised rows."""
    x = F.normalize(features.double(), dim=1)
    x = x - x.mean(dim=0)
    eigenvalues = torch.linalg.eigvalsh(x.T @ x / max(len(x) - 1, 1)).clamp_min(0)
    total = eigenvalues.sum()
    if total <= 0:
        return 1.0
    p = eigenvalues[eigenvalues > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def _neighbours(features: torch.Tensor, k: int) -> torch.Tensor:
    bank = F.normalize(features.float(), dim=1)
    _, indices = ExactIndex(bank, "ip").search(bank, k + 1)
    return indices[:, 1:]  # each row's own image comes first


def neighbour_overlap(reference: torch.Tensor, features: torch.Tensor, k: int = 10) -> float:
    """Mean fraction of the ``k`` cosine nearest neighbours shared by the two feature sets."""
    if len(reference) != len(features):
        raise ValueError(f"{len(reference)} reference rows for {len(features)} feature rows")
    if len(features) <= k:
        raise ValueError(f"neighbour overlap with k={k} needs more than {k} images")
    a, b = _neighbours(reference, k), _neighbours(features, k)
    shared = (a.unsqueeze(2) == b.unsqueeze(1)).any(dim=2).sum(dim=1)
    return float(shared.double().mean() / k)


def linear_cka(reference: torch.Tensor, features: torch.Tensor) -> float:
    """Linear CKA: ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), in float64."""
    x = reference.double() - reference.double().mean(dim=0)
    y = features.double() - features.double().mean(dim=0)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norms = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norms) if norms > 0 else 0.0


def feature_drift(
    reference: torch.Tensor, features: torch.Tensor, k: int = 10, max_images: int = 5000
) -> dict[str, float]:
    """The three signals of ``features`` against the pretrained ``reference`` (same images).

    At most ``max_images`` rows (a fixed, evenly spaced subset) keep the cost bounded.
    """
    if reference.shape[0] != features.shape[0]:
        raise ValueError(f"{len(reference)} reference rows for {len(features)} feature rows")
    if len(features) > max_images:
        rows = torch.linspace(0, len(features) - 1, max_images).long()
        reference, features = reference[rows], features[rows]
    return {
        "effective_rank_ratio": effective_rank(features) / effective_rank(reference),
        "neighbour_overlap": neighbour_overlap(reference, features, k),
        "linear_cka": linear_cka(reference, features),
    }


@dataclass(frozen=True)
class DriftGuard:
    """Says when a finetuned model's features drifted past ``minimum`` of ``signal``: the
    threshold below which, on the development split, finetuning had made the kNN AUROC worse
    than the pretrained features'. A warning, not a stop: the run's results are still written."""

    signal: str
    minimum: float

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"unknown drift signal {self.signal!r}; expected one of {SIGNALS}")

    def check(self, drift: Mapping[str, float], model: str) -> str | None:
        """The warning for ``model``'s ``drift`` signals, or None when it stayed above."""
        value = drift.get(self.signal)
        if value is None or value >= self.minimum:
            return None
        return (
            f"the {model}'s features drifted from the pretrained ones ({self.signal} "
            f"{value:.3f} < {self.minimum}): on the development split such finetuning made the "
            "kNN AUROC worse than the pretrained backbone's (DN2). Lower the learning rate or "
            "the epochs, or raise finetune.distill_weight (docs: Fashion-MNIST, the guard)."
        )
