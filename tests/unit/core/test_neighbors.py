"""Neighbour mining and purity vs brute force, the anchor left out or included.

With the anchor, as the official SCAN code mines (github.com/wvangansbeke/
Unsupervised-Classification, snapshot 952ec31): ``utils/memory.py`` L46-54 search
``topk + 1`` with faiss ``IndexFlatIP`` ("Sample itself is included") and L59 measure the
accuracy without the anchor's column.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ood_nolabels.core import search
from ood_nolabels.core.neighbors import mine_neighbors, neighbor_modularity, neighbor_purity

SEARCH_PATHS = [
    pytest.param(True, marks=pytest.mark.skipif(search.faiss is None, reason="needs faiss")),
    False,
]


def brute_force_neighbors(features: np.ndarray, k: int) -> np.ndarray:
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("use_faiss", SEARCH_PATHS)
def test_mine_neighbors_matches_brute_force(use_faiss: bool) -> None:
    features = np.random.default_rng(4).normal(size=(150, 16)).astype(np.float32)
    got = mine_neighbors(torch.from_numpy(features), k=5, use_faiss=use_faiss, chunk_size=7)
    assert got.shape == (150, 5) and got.dtype == torch.long
    np.testing.assert_array_equal(got.numpy(), brute_force_neighbors(features, 5))


@pytest.mark.parametrize("use_faiss", SEARCH_PATHS)
def test_mine_neighbors_excludes_self_with_duplicate_points(use_faiss: bool) -> None:
    """Each point appears 3 times: its 2 copies tie with it, yet it never lists itself."""
    base = np.random.default_rng(5).normal(size=(20, 8)).astype(np.float32)
    features = np.concatenate([base, base, base])
    got = mine_neighbors(features, k=3, use_faiss=use_faiss, chunk_size=16)
    anchors = torch.arange(len(features)).unsqueeze(1)
    assert got.shape == (60, 3)
    assert not (got == anchors).any()
    copies = got[:, :2] % 20 == anchors % 20
    assert copies.all()


def test_mine_neighbors_rejects_bad_k() -> None:
    with pytest.raises(ValueError, match="k must be"):
        mine_neighbors(torch.randn(5, 3), k=5)


def test_neighbor_purity_hand_made() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1])
    neighbors = torch.tensor([[1, 2], [0, 2], [0, 1], [4, 0], [3, 2]])
    # per-anchor purity: 1/2, 1/2, 0, 1/2, 1
    assert neighbor_purity(neighbors, labels) == pytest.approx(0.5)
    assert neighbor_purity(neighbors.numpy(), labels.numpy()) == pytest.approx(0.5)


# -- the anchor included (official utils/memory.py) ---------------------------------------------


@pytest.mark.parametrize("use_faiss", SEARCH_PATHS)
def test_mining_with_the_anchor_returns_it_among_k_plus_1_brute_force_candidates(use_faiss):
    """utils/memory.py: ``search(features, topk + 1)``, the sample itself included."""
    features = np.random.default_rng(4).normal(size=(150, 16)).astype(np.float32)
    got = mine_neighbors(features, k=5, use_faiss=use_faiss, include_self=True, chunk_size=7)
    assert got.shape == (150, 6) and got.dtype == torch.long
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    brute_force = np.argsort(-(unit @ unit.T), axis=1, kind="stable")[:, :6]  # self ranks first
    assert np.array_equal(brute_force[:, 0], np.arange(150))
    np.testing.assert_array_equal(got.numpy(), brute_force)
    without = mine_neighbors(features, k=5, use_faiss=use_faiss, chunk_size=7)
    assert torch.equal(got[:, 1:], without)


@pytest.mark.parametrize("use_faiss", SEARCH_PATHS)
def test_mining_with_the_anchor_lists_it_exactly_once_among_duplicates(use_faiss):
    base = np.random.default_rng(5).normal(size=(20, 8)).astype(np.float32)
    features = np.concatenate([base, base, base])  # each point ties with its two copies
    got = mine_neighbors(features, k=3, use_faiss=use_faiss, include_self=True, chunk_size=16)
    anchors = torch.arange(60).unsqueeze(1)
    assert got.shape == (60, 4)
    assert torch.equal((got == anchors).sum(dim=1), torch.ones(60, dtype=torch.long))
    assert (got[:, :3] % 20 == anchors % 20).all()  # the anchor and its two copies first


def test_neighbor_purity_leaves_the_anchor_out():
    """utils/memory.py: the accuracy compares ``indices[:, 1:]`` with the anchor's label."""
    labels = torch.tensor([0, 0, 1, 1])
    with_anchor = torch.tensor([[0, 1, 2], [1, 0, 3], [2, 3, 0], [3, 2, 1]])
    assert neighbor_purity(with_anchor, labels) == pytest.approx(0.5)  # not 8 / 12
    assert neighbor_purity(with_anchor, labels) == neighbor_purity(with_anchor[:, 1:], labels)


def dense_modularity(neighbors: np.ndarray, clusters: np.ndarray) -> float:
    """Directed modularity from the dense adjacency matrix, float64 numpy."""
    n = len(neighbors)
    adjacency = np.zeros((n, n))
    for i, row in enumerate(neighbors):
        for j in row:
            if j != i:
                adjacency[i, j] += 1
    m = adjacency.sum()
    expected = np.outer(adjacency.sum(1), adjacency.sum(0)) / m
    same = clusters[:, None] == clusters[None, :]
    return float(((adjacency - expected) * same).sum() / m)


def test_neighbor_modularity_matches_the_dense_formula_and_punishes_merging():
    rng = np.random.default_rng(0)
    centres = 10 * np.eye(4)  # cosine neighbours: the clusters lie in different directions
    points = np.concatenate([rng.normal(centre, 1, (40, 4)) for centre in centres])
    truth = np.repeat(np.arange(4), 40)
    neighbors = mine_neighbors(torch.as_tensor(points), 5, include_self=True)
    for clusters in (truth, rng.integers(0, 4, 160), np.where(truth == 3, 2, truth)):
        assert neighbor_modularity(neighbors, torch.as_tensor(clusters)) == pytest.approx(
            dense_modularity(neighbors.numpy(), clusters)
        )
    right = neighbor_modularity(neighbors, torch.as_tensor(truth))
    merged = neighbor_modularity(neighbors, torch.as_tensor(np.where(truth == 3, 2, truth)))
    assert right == pytest.approx(0.75, abs=0.02)  # 4 equal, separated clusters: 1 - 1/4
    assert merged < right  # every edge is still inside a cluster, yet the score drops
    assert neighbor_modularity(neighbors, torch.zeros(160, dtype=torch.long)) == pytest.approx(0)
