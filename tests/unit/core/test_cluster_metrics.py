"""Clustering metrics vs brute-force reference implementations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from ood_nolabels.core.cluster_metrics import cluster_metrics, hungarian_accuracy


def brute_force_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Best accuracy over every injective cluster-to-class (or class-to-cluster) mapping."""
    clusters, classes = np.unique(pred), np.unique(target)
    best = 0
    if len(clusters) <= len(classes):
        for image in itertools.permutations(classes, len(clusters)):
            mapping = dict(zip(clusters, image, strict=True))
            best = max(best, sum(mapping[p] == t for p, t in zip(pred, target, strict=True)))
    else:
        for image in itertools.permutations(clusters, len(classes)):
            mapping = dict(zip(classes, image, strict=True))
            best = max(best, sum(mapping[t] == p for p, t in zip(pred, target, strict=True)))
    return best / len(pred)


def test_accuracy_is_one_under_any_relabelling() -> None:
    rng = np.random.default_rng(0)
    target = rng.integers(0, 6, 200)
    for _ in range(5):
        relabel = rng.permutation(6) * 10 + 7  # arbitrary, non-contiguous cluster ids
        assert hungarian_accuracy(relabel[target], target) == 1.0


def test_accuracy_hand_made_confusion() -> None:
    # cluster 0 holds 1 sample of class 0 and 3 of class 1; cluster 1 holds 2 of class 0.
    pred = [1, 1, 0, 0, 0, 0]
    target = [0, 0, 0, 1, 1, 1]
    assert hungarian_accuracy(np.array(pred), np.array(target)) == pytest.approx(5 / 6)


def test_accuracy_rectangular_unmatched_clusters_count_as_wrong() -> None:
    # clusters 0 and 1 both hold class 0; only one of them can be matched to it.
    pred, target = np.array([0, 0, 1, 1, 2, 2, 2, 2]), np.array([0, 0, 0, 0, 1, 1, 1, 1])
    more_clusters = hungarian_accuracy(pred, target)
    assert more_clusters == pytest.approx(6 / 8)
    assert hungarian_accuracy(np.zeros(4, dtype=int), np.array([0, 0, 1, 2])) == pytest.approx(0.5)


@pytest.mark.parametrize("n_clusters,n_classes", [(3, 3), (4, 3), (2, 4)])
def test_accuracy_matches_brute_force(n_clusters: int, n_classes: int) -> None:
    rng = np.random.default_rng(n_clusters * 10 + n_classes)
    pred, target = rng.integers(0, n_clusters, 60), rng.integers(0, n_classes, 60)
    assert hungarian_accuracy(pred, target) == pytest.approx(brute_force_accuracy(pred, target))


def test_cluster_metrics_accept_tensors_and_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    pred, target = rng.integers(0, 4, 100), rng.integers(0, 3, 100)
    metrics = cluster_metrics(torch.from_numpy(pred), torch.from_numpy(target))
    assert set(metrics) == {"acc", "nmi", "ari"}
    assert metrics["acc"] == pytest.approx(brute_force_accuracy(pred, target))
    assert metrics["nmi"] == pytest.approx(normalized_mutual_info_score(target, pred))
    assert metrics["ari"] == pytest.approx(adjusted_rand_score(target, pred))


def test_metrics_reject_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="entries"):
        cluster_metrics(np.zeros(3), np.zeros(4))
