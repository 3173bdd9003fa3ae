"""Class-conditional Mahalanobis distance with a shared covariance (Lee et al., 2018)."""

from __future__ import annotations

import torch

from ood_nolabels.scoring.base import Scorer, check_features, check_state


def pseudo_inverse(covariance: torch.Tensor) -> torch.Tensor:
    """Pseudo-inverse of a symmetric PSD matrix: eigh first, SVD when eigh does not converge.

    LAPACK's symmetric eigensolver can fail on ill-conditioned, rank-deficient covariances of
    pretrained features (depending even on the thread count); the SVD route is slower but
    converges on them.
    """
    try:
        return torch.linalg.pinv(covariance, hermitian=True)
    except torch.linalg.LinAlgError:
        return torch.linalg.pinv(covariance, hermitian=False)


class MahalanobisScorer(Scorer):
    """Score = min over classes of the squared Mahalanobis distance to the class mean.

    Classes are the given labels (pseudo-labels in the paper's method); without labels the
    normal data is one Gaussian. The shared covariance is the pooled within-class covariance,
    computed in float64 and inverted with a pseudo-inverse (features of pretrained networks are
    often rank-deficient); ``shrinkage`` adds a multiple of the mean variance to the diagonal.
    """

    def __init__(self, shrinkage: float = 0.0) -> None:
        self.shrinkage = shrinkage
        self.means: torch.Tensor | None = None
        self.precision: torch.Tensor | None = None

    def fit(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> MahalanobisScorer:
        x = check_features(features, "training features").detach().cpu().double()
        if labels is None:
            labels = torch.zeros(len(x), dtype=torch.long)
        labels = torch.as_tensor(labels).cpu().long()
        if labels.shape != (len(x),):
            raise ValueError(f"{len(x)} features but labels of shape {tuple(labels.shape)}")
        classes = labels.unique()
        self.means = torch.stack([x[labels == c].mean(0) for c in classes])
        centered = x - self.means[torch.searchsorted(classes, labels)]
        covariance = centered.T @ centered / len(x)
        if self.shrinkage:
            covariance += self.shrinkage * covariance.diagonal().mean() * torch.eye(len(covariance))
        self.precision = pseudo_inverse(covariance)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.means is None:
            raise RuntimeError("MahalanobisScorer.state_dict called before fit")
        return {"means": self.means, "precision": self.precision}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> MahalanobisScorer:
        """The saved class means and shared precision matrix (float64), used as they are."""
        check_state(state, ("means", "precision"), "MahalanobisScorer")
        means, precision = state["means"].double(), state["precision"].double()
        if means.ndim != 2 or precision.shape != (means.shape[1], means.shape[1]):
            raise ValueError(
                f"saved Mahalanobis means {tuple(means.shape)} and precision "
                f"{tuple(precision.shape)} do not fit together"
            )
        self.means, self.precision = means, precision
        return self

    def score(self, features: torch.Tensor) -> torch.Tensor:
        if self.means is None:
            raise RuntimeError("MahalanobisScorer.score called before fit")
        x = check_features(features, "test features").detach().cpu().double()
        # One class at a time keeps memory at N x D instead of N x C x D.
        distances = torch.stack(
            [((x - mean) @ self.precision * (x - mean)).sum(1) for mean in self.means], dim=1
        )
        return distances.min(dim=1).values.float()
