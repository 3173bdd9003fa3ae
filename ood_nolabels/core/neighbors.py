"""Nearest-neighbour mining in a feature space: the "neighbours" SCAN pulls together."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ood_nolabels.core.search import ExactIndex


def _drop_self(candidates: torch.Tensor) -> torch.Tensor:
    """Remove each row's own index from its ``k + 1`` candidates, else its last candidate.

    With duplicate points the query may tie with its copies and be ranked anywhere or not at
    all, so the query index is looked up instead of assuming it comes first.
    """
    n, width = candidates.shape
    is_self = candidates == torch.arange(n).unsqueeze(1)
    drop = torch.where(is_self.any(dim=1), is_self.int().argmax(dim=1), width - 1)
    keep = torch.ones_like(candidates, dtype=torch.bool)
    keep[torch.arange(n), drop] = False
    return candidates[keep].view(n, width - 1)


def mine_neighbors(
    features: torch.Tensor | np.ndarray,
    k: int,
    use_faiss: bool = True,
    include_self: bool = False,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Indices ``(N, k)`` of each point's ``k`` most cosine-similar other points.

    With ``include_self`` the anchor is a candidate too: ``(N, k + 1)`` with the anchor's own
    index in column 0, as the official SCAN code mines (``search(features, topk + 1)``, "sample
    itself is included") and samples its neighbour from all ``k + 1`` (the anchor with
    probability ``1 / (k + 1)``). The anchor is placed there explicitly rather than trusted to
    rank first, which duplicates or rounding could break.
    """
    features = torch.as_tensor(features).detach().float().cpu()
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    if not 1 <= k < len(features):
        raise ValueError(f"k must be in [1, N-1] = [1, {len(features) - 1}], got {k}")
    features = F.normalize(features, dim=1).contiguous()
    index = ExactIndex(features, "ip", use_faiss=use_faiss, chunk_size=chunk_size)
    _, candidates = index.search(features, k + 1)
    neighbors = _drop_self(candidates)
    if include_self:
        neighbors = torch.cat([torch.arange(len(neighbors)).unsqueeze(1), neighbors], dim=1)
    return neighbors


def neighbor_purity(
    neighbors: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
) -> float:
    """Mean fraction of neighbours sharing their anchor's label (SCAN's mining sanity check).

    Entries equal to the anchor's own index (mined with ``include_self``) are not counted: the
    official accuracy also leaves the anchor's column out.
    """
    neighbors = torch.as_tensor(neighbors).long()
    labels = torch.as_tensor(labels)
    others = neighbors != torch.arange(len(neighbors)).unsqueeze(1)
    same = labels[neighbors] == labels.unsqueeze(1)
    return ((same & others).sum() / others.sum()).item()


def neighbor_modularity(
    neighbors: torch.Tensor | np.ndarray, clusters: torch.Tensor | np.ndarray
) -> float:
    """Modularity of a clustering on the directed k-NN graph (Leicht & Newman 2008).

    ``Q = (1/m) sum_ij [A_ij - k_i^out k_j^in / m] [c_i = c_j]``: the fraction of neighbour
    edges inside clusters minus the fraction expected by chance with the same degrees and
    cluster sizes. Unlike the plain agreement with the neighbours, merging two clusters does not
    raise it for free, so it compares two clusterings of the same images without labels.
    Entries equal to the anchor's own index are not edges.
    """
    neighbors = torch.as_tensor(neighbors).long()
    clusters = torch.as_tensor(clusters).long()
    n = len(neighbors)
    if len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster ids for {n} neighbour rows")
    edges = neighbors != torch.arange(n).unsqueeze(1)
    m = edges.sum().double()
    if m == 0:
        raise ValueError("the neighbour graph has no edge")
    inside = ((clusters[neighbors] == clusters.unsqueeze(1)) & edges).sum().double() / m
    num_clusters = int(clusters.max()) + 1
    out_degree = torch.zeros(num_clusters, dtype=torch.float64).index_add_(
        0, clusters, edges.sum(dim=1).double()
    )
    in_degree = torch.bincount(clusters[neighbors][edges], minlength=num_clusters).double()
    return float(inside - (out_degree * in_degree).sum() / m**2)
