"""K=auto: the eigengap of the normalised Laplacian of the mined kNN graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import laplacian

from ood_nolabels.core import eigengap as auto_k
from ood_nolabels.core.eigengap import eigengap_k, knn_graph
from ood_nolabels.core.neighbors import mine_neighbors


def test_knn_graph_is_symmetric_and_leaves_the_anchor_out():
    neighbors = torch.tensor([[0, 1], [1, 2], [2, 0]])  # anchors mined among their candidates
    graph = knn_graph(neighbors).toarray()
    np.testing.assert_array_equal(graph, [[0, 1, 1], [1, 0, 1], [1, 1, 0]])


def test_eigengap_finds_the_number_of_disconnected_groups():
    """c disjoint groups: exactly c zero eigenvalues of the normalised Laplacian (scipy's)."""
    sizes = [12, 9, 15, 10]
    starts = np.cumsum([0, *sizes[:-1]])
    rows = [
        [start + (i + j) % size for j in range(1, 4)]
        for start, size in zip(starts, sizes, strict=True)
        for i in range(size)
    ]
    choice = eigengap_k(torch.tensor(rows), 2, 8)
    assert choice.k == 4
    reference = np.sort(
        np.linalg.eigvalsh(laplacian(knn_graph(torch.tensor(rows)).toarray(), normed=True))
    )
    np.testing.assert_allclose(choice.eigenvalues, reference[:9], atol=1e-8)
    assert choice.gaps[choice.k_values.index(4)] == pytest.approx(reference[4] - reference[3])


def test_eigengap_on_mined_neighbours_of_blobs():
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(16)[:5] * 10
    points = torch.cat([c + torch.randn(40, 16, generator=generator) for c in centres])
    neighbors = mine_neighbors(points, 10, use_faiss=False, include_self=True)
    assert eigengap_k(neighbors, 2, 12).k == 5


def test_sparse_eigensolver_agrees_with_the_dense_one(monkeypatch):
    """Large sets use ARPACK on the sparse graph: same spectrum as the dense decomposition."""
    generator = torch.Generator().manual_seed(1)
    points = torch.cat([c + torch.randn(30, 8, generator=generator) for c in torch.eye(8)[:3] * 8])
    neighbors = mine_neighbors(points, 8, use_faiss=False)
    dense = eigengap_k(neighbors, 2, 6)
    monkeypatch.setattr(auto_k, "DENSE_LIMIT", 0)
    sparse = eigengap_k(neighbors, 2, 6)
    assert sparse.k == dense.k == 3
    np.testing.assert_allclose(sparse.eigenvalues, dense.eigenvalues, atol=1e-6)


def test_eigengap_refuses_an_impossible_range():
    with pytest.raises(ValueError, match="k_min <= k_max"):
        eigengap_k(torch.zeros(5, 2, dtype=torch.long), 4, 3)
