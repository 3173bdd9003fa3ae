"""The scorer interface: fit once on normal training features, then score any features."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Scorer(ABC):
    """Anomaly scorer: higher score = more anomalous.

    ``fit`` builds the memory bank / statistics from the normal training features (and optional
    pseudo- or ground-truth labels); ``score`` is then called on any number of test sets.
    ``state_dict`` / ``load_state_dict`` save and restore the fitted state (tensors only), so a
    saved detector scores new images without the training features.
    """

    @abstractmethod
    def fit(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> Scorer: ...

    @abstractmethod
    def score(self, features: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The fitted state; raises before ``fit``."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> Scorer:
        """Restore a state from :meth:`state_dict` (of a scorer with the same settings)."""


def check_state(state: dict[str, torch.Tensor], keys: tuple[str, ...], scorer: str) -> None:
    """A saved scorer state with exactly the expected tensors, or an error naming the difference."""
    if set(state) != set(keys):
        raise ValueError(f"{scorer} state has keys {sorted(state)}, expected {sorted(keys)}")


def check_features(features: torch.Tensor, what: str) -> torch.Tensor:
    """2-D finite float features, or a clear error (NaNs here usually mean a diverged model)."""
    features = torch.as_tensor(features)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(
            f"{what} must be a non-empty (N, D) matrix, got shape {tuple(features.shape)}"
        )
    if not torch.isfinite(features).all():
        raise ValueError(f"{what} contain NaN or inf values; the backbone may have diverged")
    return features.float()
