"""k-nearest-neighbour distance to the normal training features (DN2, and the paper's scorer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ood_nolabels.scoring.base import Scorer, check_features

try:
    import faiss
except ImportError:  # faiss is optional: the torch path gives the same distances
    faiss = None

METRICS = ("cosine", "l2")


class KNNScorer(Scorer):
    """Score = mean distance to the ``k`` nearest normal training features.

    ``metric="cosine"`` uses 1 - cosine similarity on L2-normalised features; ``"l2"`` the
    Euclidean distance. Search uses an exact faiss index when faiss is installed (``use_faiss``),
    otherwise a chunked torch matmul whose memory is bounded by ``chunk_size`` x bank size.
    """

    def __init__(
        self, k: int = 1, metric: str = "cosine", use_faiss: bool = True, chunk_size: int = 1024
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
        self.k = k
        self.metric = metric
        self.use_faiss = use_faiss and faiss is not None
        self.chunk_size = chunk_size
        self.bank: torch.Tensor | None = None
        self.index = None

    def _prepare(self, features: torch.Tensor) -> torch.Tensor:
        features = features.detach().float().cpu()
        return F.normalize(features, dim=1) if self.metric == "cosine" else features

    def fit(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> KNNScorer:
        bank = self._prepare(check_features(features, "training features")).contiguous()
        if len(bank) < self.k:
            raise ValueError(f"k={self.k} but only {len(bank)} training features")
        self.bank = bank
        if self.use_faiss:
            index_type = faiss.IndexFlatIP if self.metric == "cosine" else faiss.IndexFlatL2
            self.index = index_type(bank.shape[1])
            self.index.add(bank.numpy())
        return self

    def _search(self, queries: torch.Tensor) -> torch.Tensor:
        """Similarities (cosine) or squared distances (l2) of the k nearest neighbours."""
        if self.index is not None:
            values, _ = self.index.search(queries.numpy(), self.k)
            return torch.from_numpy(values)
        chunks = []
        for chunk in queries.split(self.chunk_size):
            if self.metric == "cosine":
                chunks.append((chunk @ self.bank.T).topk(self.k, dim=1).values)
            else:
                squared = torch.cdist(chunk.double(), self.bank.double()).square()
                chunks.append(squared.topk(self.k, dim=1, largest=False).values.float())
        return torch.cat(chunks)

    def score(self, features: torch.Tensor) -> torch.Tensor:
        if self.bank is None:
            raise RuntimeError("KNNScorer.score called before fit")
        queries = self._prepare(check_features(features, "test features")).contiguous()
        nearest = self._search(queries)
        distances = 1.0 - nearest if self.metric == "cosine" else nearest.clamp_min(0).sqrt()
        return distances.mean(dim=1)
