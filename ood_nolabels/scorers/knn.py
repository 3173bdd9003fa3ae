"""k-nearest-neighbour distance to the normal training features (DN2, and the paper's scorer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ood_nolabels.core.search import ExactIndex, IVFIndex
from ood_nolabels.scorers.base import Scorer, check_features, check_state

METRICS = ("cosine", "l2")


class KNNScorer(Scorer):
    """Score = mean distance to the ``k`` nearest normal training features.

    ``metric="cosine"`` uses 1 - cosine similarity on L2-normalised features; ``"l2"`` the
    Euclidean distance. The search is the exact :class:`~ood_nolabels.core.search.ExactIndex`
    (a faiss flat index when ``use_faiss`` and faiss is installed, else a chunked torch matmul
    bounded by ``chunk_size`` x bank size); query features on a GPU are searched on the GPU.
    With ``nlist`` the search is approximate instead: a faiss IVF index of ``nlist`` cells, of
    which each query searches ``nprobe`` (:class:`~ood_nolabels.core.search.IVFIndex`), for
    banks of a million images. Scores come back on the CPU.
    """

    def __init__(
        self,
        k: int = 1,
        metric: str = "cosine",
        use_faiss: bool = True,
        chunk_size: int = 1024,
        nlist: int | None = None,
        nprobe: int = 16,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
        if nlist is not None and not 1 <= nprobe <= nlist:
            raise ValueError(f"scorer.knn.nprobe={nprobe} must be in [1, nlist={nlist}]")
        self.k = k
        self.metric = metric
        self.use_faiss = use_faiss
        self.chunk_size = chunk_size
        self.nlist = nlist
        self.nprobe = nprobe
        self.index: ExactIndex | IVFIndex | None = None

    def _prepare(self, features: torch.Tensor) -> torch.Tensor:
        features = features.detach().float()
        features = F.normalize(features, dim=1) if self.metric == "cosine" else features
        return features.contiguous()

    def fit(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> KNNScorer:
        return self._set_bank(self._prepare(check_features(features, "training features").cpu()))

    def _set_bank(self, bank: torch.Tensor, centroids: torch.Tensor | None = None) -> KNNScorer:
        if len(bank) < self.k:
            raise ValueError(f"k={self.k} but only {len(bank)} training features")
        search_metric = "ip" if self.metric == "cosine" else "l2"
        if self.nlist is None:
            self.index = ExactIndex(bank, search_metric, self.use_faiss, self.chunk_size)
        else:
            self.index = IVFIndex(bank, search_metric, self.nlist, self.nprobe, centroids)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The bank, and with ``nlist`` the IVF cells' centres (no k-means again on loading)."""
        if self.index is None:
            raise RuntimeError("KNNScorer.state_dict called before fit")
        if isinstance(self.index, IVFIndex):
            return {"bank": self.index.bank, "centroids": self.index.centroids}
        return {"bank": self.index.bank}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> KNNScorer:
        """The saved bank (already normalised for ``cosine``), and its faiss index rebuilt (on the
        saved IVF cells; a detector saved before they were kept runs k-means again)."""
        ivf_keys = ("bank", "centroids") if "centroids" in state else ("bank",)
        check_state(state, ivf_keys if self.nlist else ("bank",), "KNNScorer")
        bank = check_features(state["bank"], "saved kNN bank").cpu().contiguous()
        return self._set_bank(bank, state.get("centroids"))

    def score(self, features: torch.Tensor) -> torch.Tensor:
        if self.index is None:
            raise RuntimeError("KNNScorer.score called before fit")
        nearest, _ = self.index.search(
            self._prepare(check_features(features, "test features")), self.k
        )
        distances = 1.0 - nearest if self.metric == "cosine" else nearest.clamp_min(0).sqrt()
        return distances.mean(dim=1)
