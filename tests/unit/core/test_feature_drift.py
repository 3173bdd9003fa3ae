"""The label-free feature-drift signals against independent numpy / brute-force computations."""

import numpy as np
import pytest
import torch

from ood_nolabels.core.feature_drift import (
    SIGNALS,
    DriftGuard,
    effective_rank,
    feature_drift,
    linear_cka,
    neighbour_overlap,
)


def numpy_effective_rank(x: np.ndarray) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    eigenvalues = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False)), 0, None)
    p = eigenvalues[eigenvalues > 0] / eigenvalues.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def brute_force_neighbours(x: np.ndarray, k: int) -> list[set[int]]:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    return [set(np.argsort(-row)[:k]) for row in similarity]


def numpy_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x.astype(np.float64), y.astype(np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def test_effective_rank_matches_numpy_and_counts_equal_directions():
    x = torch.randn(300, 12, generator=torch.Generator().manual_seed(0))
    assert effective_rank(x) == pytest.approx(numpy_effective_rank(x.numpy()), rel=1e-9)
    # Rows spread evenly over 3 orthogonal directions (both signs): rank 3 exactly.
    basis = torch.eye(12)[:3]
    rows = torch.cat([basis, -basis]).repeat(50, 1)
    assert effective_rank(rows) == pytest.approx(3.0, rel=1e-6)


def test_neighbour_overlap_matches_brute_force():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(200, 8, generator=gen)
    b = a + 0.5 * torch.randn(200, 8, generator=gen)
    first, second = brute_force_neighbours(a.numpy(), 5), brute_force_neighbours(b.numpy(), 5)
    expected = np.mean([len(s & t) / 5 for s, t in zip(first, second, strict=True)])
    assert neighbour_overlap(a, b, k=5) == pytest.approx(expected)
    assert neighbour_overlap(a, 3 * a, k=5) == pytest.approx(1.0)  # cosine: scale-free


def test_linear_cka_matches_numpy_and_its_invariances():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(150, 10, generator=gen)
    y = torch.randn(150, 6, generator=gen)
    assert linear_cka(x, y) == pytest.approx(numpy_linear_cka(x.numpy(), y.numpy()), rel=1e-9)
    rotation, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen))
    assert linear_cka(x, 2 * x @ rotation + 1) == pytest.approx(1.0)


def test_feature_drift_of_unchanged_features_is_none_and_collapse_shows():
    gen = torch.Generator().manual_seed(3)
    pretrained = torch.randn(400, 16, generator=gen)
    same = feature_drift(pretrained, pretrained.clone(), k=5)
    assert set(same) == set(SIGNALS)
    assert same == pytest.approx({s: 1.0 for s in SIGNALS})
    # Collapse: every image onto one of 4 class directions plus a little noise.
    classes = torch.arange(400) % 4
    collapsed = torch.eye(16)[classes] * 10 + 0.1 * torch.randn(400, 16, generator=gen)
    drift = feature_drift(pretrained, collapsed, k=5)
    assert drift["effective_rank_ratio"] < 0.5
    assert drift["neighbour_overlap"] < 0.2
    assert drift["linear_cka"] < 0.2


def test_feature_drift_bounds_its_cost_and_checks_its_inputs():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(4))
    subset = feature_drift(x, x * 2, k=3, max_images=20)
    assert subset["neighbour_overlap"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="reference rows"):
        feature_drift(x, x[:40])
    with pytest.raises(ValueError, match="more than 10 images"):
        neighbour_overlap(x[:10], x[:10], k=10)


def test_the_guard_warns_below_its_minimum_only():
    guard = DriftGuard("linear_cka", 0.7)
    assert guard.check({"linear_cka": 0.7}, "averaged model") is None
    assert guard.check({}, "averaged model") is None  # not measured: nothing to say
    warning = guard.check({"linear_cka": 0.65}, "averaged model")
    assert "averaged model's features drifted" in warning
    assert "linear_cka 0.650 < 0.7" in warning and "distill_weight" in warning
    with pytest.raises(ValueError, match="unknown drift signal 'cka'"):
        DriftGuard("cka", 0.7)
