"""The eigengap heuristic: a number of clusters read from a k-nearest-neighbour graph alone.

Von Luxburg 2007, "A tutorial on spectral clustering", §8.3: take the smallest eigenvalues
``λ_1 <= λ_2 <= ...`` of the graph's normalised Laplacian and choose the K in ``[k_min, k_max]``
with the largest gap ``λ_{K+1} - λ_K``. A graph made of K weakly linked groups has K eigenvalues
near 0 and a jump after them. ``K=auto`` builds the graph from the neighbours of the very features
the pseudo-label source clusters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import eigsh

# Below this many images the Laplacian is decomposed densely (exact, and faster than ARPACK).
DENSE_LIMIT = 3000


@dataclass
class KChoice:
    """The chosen K and the curve it was read from: ``gaps[i]`` belongs to ``k_values[i]``."""

    k: int
    k_values: list[int]
    gaps: list[float]
    eigenvalues: list[float]


def knn_graph(neighbors: torch.Tensor) -> sp.csr_matrix:
    """The symmetric 0/1 adjacency of mined neighbours ``(N, k')``; each point's own index (an
    anchor mined among its candidates) is left out."""
    neighbors = torch.as_tensor(neighbors).long()
    n, width = neighbors.shape
    rows = np.repeat(np.arange(n), width)
    cols = neighbors.flatten().numpy()
    keep = rows != cols
    graph = sp.csr_matrix((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(n, n))
    return ((graph + graph.T) > 0).astype(np.float64)


def laplacian_spectrum(graph: sp.csr_matrix, count: int) -> np.ndarray:
    """The ``count`` smallest eigenvalues of ``I - D^-1/2 A D^-1/2``, ascending."""
    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = sp.diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    similarity = scale @ graph @ scale
    n = graph.shape[0]
    if n <= DENSE_LIMIT:
        top = np.linalg.eigvalsh(similarity.toarray())[::-1][:count]
    else:  # the largest of the normalised adjacency are the smallest of the Laplacian
        top = np.sort(eigsh(similarity, k=count, which="LA", return_eigenvectors=False))[::-1]
    return np.clip(1.0 - top, 0.0, None)


def eigengap_k(neighbors: torch.Tensor, k_min: int, k_max: int) -> KChoice:
    """K in ``[k_min, k_max]`` with the largest gap after the K-th Laplacian eigenvalue."""
    n = len(neighbors)
    if not 2 <= k_min <= k_max < n - 1:
        raise ValueError(f"auto_k needs 2 <= k_min <= k_max < N-1={n - 1}, got {k_min}, {k_max}")
    eigenvalues = laplacian_spectrum(knn_graph(neighbors), k_max + 1)
    k_values = list(range(k_min, k_max + 1))
    gaps = [float(eigenvalues[k] - eigenvalues[k - 1]) for k in k_values]
    k = k_values[int(np.argmax(gaps))]
    return KChoice(k, k_values, gaps, eigenvalues.tolist())
