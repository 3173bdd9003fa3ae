"""Clustering quality vs ground-truth labels, for monitoring only (training never uses them)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

ArrayLike = np.ndarray | torch.Tensor


def _as_labels(values: ArrayLike, name: str) -> np.ndarray:
    array = (
        values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    )
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _pair(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    pred, target = _as_labels(pred, "pred"), _as_labels(target, "target")
    if len(pred) != len(target):
        raise ValueError(f"pred has {len(pred)} entries but target has {len(target)}")
    if len(pred) == 0:
        raise ValueError("cannot score an empty clustering")
    return pred, target


def contingency(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of (cluster, class) pairs, with the cluster and class ids of its rows and columns."""
    pred, target = _pair(pred, target)
    clusters, pred_index = np.unique(pred, return_inverse=True)
    classes, target_index = np.unique(target, return_inverse=True)
    counts = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(counts, (pred_index, target_index), 1)
    return counts, clusters, classes


def hungarian_matching(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the one-to-one cluster-to-class matching with the most samples."""
    return linear_sum_assignment(counts, maximize=True)


def hungarian_accuracy(pred: ArrayLike, target: ArrayLike) -> float:
    """Accuracy under the best one-to-one cluster-to-class matching.

    Cluster ids are arbitrary, so they are matched to classes by maximising the matched counts.
    With more clusters than classes (or fewer), the matrix is rectangular and the samples of
    unmatched clusters (or classes) count as wrong.
    """
    counts, _, _ = contingency(pred, target)
    rows, cols = hungarian_matching(counts)
    return float(counts[rows, cols].sum() / counts.sum())


def cluster_metrics(pred: ArrayLike, target: ArrayLike) -> dict[str, float]:
    """Hungarian accuracy, NMI and ARI, the three numbers SCAN reports."""
    pred, target = _pair(pred, target)
    return {
        "acc": hungarian_accuracy(pred, target),
        "nmi": float(normalized_mutual_info_score(target, pred)),
        "ari": float(adjusted_rand_score(target, pred)),
    }


def prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """``{"acc": ...}`` -> ``{"<prefix>/acc": ...}``."""
    return {f"{prefix}/{name}": value for name, value in metrics.items()}
