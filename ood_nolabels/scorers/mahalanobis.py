"""Class-conditional Mahalanobis distance with a shared covariance (Lee et al., 2018)."""

from __future__ import annotations

import math

import torch

from ood_nolabels.scorers.base import Scorer, check_features, check_state


def cholesky_inverse(covariance: torch.Tensor) -> torch.Tensor | None:
    """Inverse of a symmetric matrix by Cholesky, or None unless it provably equals the pinv.

    ``torch.linalg.pinv(hermitian=True)`` zeroes eigenvalues below ``rtol * max eigenvalue``
    (``rtol = dim * eps``). The Cholesky inverse ``P`` is returned only when every eigenvalue is
    above that cutoff, checked without an eigendecomposition: ``1 / trace(P) <= min eigenvalue``
    and ``max eigenvalue <= trace(covariance)``. It is several times faster than ``eigh``.
    """
    factor, info = torch.linalg.cholesky_ex(covariance)
    if int(info) != 0:
        return None
    precision = torch.cholesky_inverse(factor)
    trace = float(precision.trace())  # finite => every entry is (|P_ij| <= sqrt(P_ii P_jj))
    rtol = len(covariance) * torch.finfo(covariance.dtype).eps
    if not math.isfinite(trace) or trace <= 0 or 1.0 / trace <= rtol * float(covariance.trace()):
        return None
    return precision


def pseudo_inverse(covariance: torch.Tensor) -> torch.Tensor:
    """Pseudo-inverse of a symmetric PSD matrix: Cholesky when the matrix is well conditioned,
    else eigh, and SVD when eigh does not converge.

    LAPACK's symmetric eigensolver can fail on ill-conditioned, rank-deficient covariances of
    pretrained features (depending even on the thread count); the SVD route is slower but
    converges on them.
    """
    precision = cholesky_inverse(covariance)
    if precision is not None:
        return precision
    try:
        return torch.linalg.pinv(covariance, hermitian=True)
    except torch.linalg.LinAlgError:
        return torch.linalg.pinv(covariance, hermitian=False)


def sample_pseudo_inverse(samples: torch.Tensor) -> torch.Tensor | None:
    """Pseudo-inverse of ``samples.T @ samples`` from the thin SVD of the ``(n, d)`` samples.

    With fewer samples than dimensions (a few hundred images, 1,280-d features) the covariance
    has rank < n: its pseudo-inverse is ``V diag(1 / s**2) V.T`` over the singular values kept by
    ``pinv``'s cutoff (``s**2 > d * eps * max s**2``), at O(n**2 d) instead of the O(d**3) of a
    d x d eigendecomposition. None when the SVD does not converge.
    """
    try:
        _, singular, vh = torch.linalg.svd(samples, full_matrices=False)
    except torch.linalg.LinAlgError:
        return None
    eigenvalues = singular.square()
    rtol = samples.shape[1] * torch.finfo(samples.dtype).eps
    keep = eigenvalues > rtol * eigenvalues.max()
    basis = vh[keep]
    return basis.T @ (basis / eigenvalues[keep, None])


class MahalanobisScorer(Scorer):
    """Score = min over classes of the squared Mahalanobis distance to the class mean.

    Classes are the given labels (pseudo-labels in the paper's method); without labels the
    normal data is one Gaussian. The shared covariance is the pooled within-class covariance,
    computed in float64 and inverted with a pseudo-inverse (features of pretrained networks are
    often rank-deficient: with fewer samples than dimensions it comes from the samples' SVD, and a
    well-conditioned covariance is inverted by Cholesky, both far faster than a d x d eigh);
    ``shrinkage`` adds a multiple of the mean variance to the diagonal.
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
        if not self.shrinkage and len(x) < x.shape[1]:
            self.precision = sample_pseudo_inverse(centered / math.sqrt(len(x)))
            if self.precision is not None:
                return self
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
