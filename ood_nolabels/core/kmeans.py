"""k-means on L2-normalised features: the k-means pseudo-labels and stage 1's SimCLR diagnostic."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans


def kmeans_clusters(features: torch.Tensor, k: int, seed: int, n_init: int = 10) -> torch.Tensor:
    """Cluster ids ``(N,)`` in cosine geometry, as the kNN scorer and the neighbour mining."""
    clusterer = KMeans(k, n_init=n_init, random_state=seed)
    return torch.as_tensor(clusterer.fit_predict(F.normalize(features, dim=1).numpy())).long()
