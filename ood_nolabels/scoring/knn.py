"""k-nearest-neighbour distance to the normal training features (DN2, and the paper's scorer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ood_nolabels.scoring.base import Scorer, check_features, check_state

try:
    import faiss
except ImportError:  # faiss is optional: the torch path gives the same distances
    faiss = None

METRICS = ("cosine", "l2")


def faiss_gpu_available() -> bool:
    """A faiss build with GPU support (the ``gpu`` extra, faiss-gpu) and a GPU it can see."""
    return faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def search_backend(device: torch.device, use_faiss: bool, faiss_gpu: bool) -> str:
    """Where the search over the bank runs, given where the query features live.

    Features on a CUDA device are searched there: by a faiss GPU index when faiss has GPU
    support, otherwise by the chunked torch matmul on that device. Anywhere else the exact CPU
    faiss index is used (the default), or the torch path when faiss is off or missing.
    """
    if device.type == "cuda":
        return "faiss-gpu" if use_faiss and faiss_gpu else "torch"
    return "faiss" if use_faiss else "torch"


class KNNScorer(Scorer):
    """Score = mean distance to the ``k`` nearest normal training features.

    ``metric="cosine"`` uses 1 - cosine similarity on L2-normalised features; ``"l2"`` the
    Euclidean distance. Search uses an exact faiss index when faiss is installed (``use_faiss``),
    otherwise a chunked torch matmul whose memory is bounded by ``chunk_size`` x bank size; query
    features on a GPU are searched on the GPU (:func:`search_backend`). Scores come back on the CPU.
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
        self.bank: torch.Tensor | None = None  # on the CPU; copies live on other devices
        self.index = None
        self._gpu_index = None
        self._device_banks: dict[torch.device, torch.Tensor] = {}

    def _prepare(self, features: torch.Tensor) -> torch.Tensor:
        features = features.detach().float()
        features = F.normalize(features, dim=1) if self.metric == "cosine" else features
        return features.contiguous()

    def fit(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> KNNScorer:
        return self._set_bank(self._prepare(check_features(features, "training features").cpu()))

    def _set_bank(self, bank: torch.Tensor) -> KNNScorer:
        if len(bank) < self.k:
            raise ValueError(f"k={self.k} but only {len(bank)} training features")
        self.bank = bank
        self.index = self._gpu_index = None
        self._device_banks = {}
        if self.use_faiss:
            index_type = faiss.IndexFlatIP if self.metric == "cosine" else faiss.IndexFlatL2
            self.index = index_type(bank.shape[1])
            self.index.add(bank.numpy())
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.bank is None:
            raise RuntimeError("KNNScorer.state_dict called before fit")
        return {"bank": self.bank}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> KNNScorer:
        """The saved bank (already normalised for ``cosine``), and its faiss index rebuilt."""
        check_state(state, ("bank",), "KNNScorer")
        return self._set_bank(check_features(state["bank"], "saved kNN bank").cpu().contiguous())

    def _search(self, queries: torch.Tensor, backend: str) -> torch.Tensor:
        """Similarities (cosine) or squared distances (l2) of the k nearest neighbours."""
        if backend == "faiss-gpu":
            if self._gpu_index is None:
                device = queries.device.index or 0
                self._gpu_index = faiss.index_cpu_to_gpu(
                    faiss.StandardGpuResources(), device, self.index
                )
            values, _ = self._gpu_index.search(queries.cpu().numpy(), self.k)
            return torch.from_numpy(values)
        if backend == "faiss":
            values, _ = self.index.search(queries.cpu().numpy(), self.k)
            return torch.from_numpy(values)
        if queries.device not in self._device_banks:
            self._device_banks[queries.device] = self.bank.to(queries.device)
        bank = self._device_banks[queries.device]
        chunks = []
        for chunk in queries.split(self.chunk_size):
            if self.metric == "cosine":
                chunks.append((chunk @ bank.T).topk(self.k, dim=1).values.cpu())
            else:
                squared = torch.cdist(chunk.double(), bank.double()).square()
                chunks.append(squared.topk(self.k, dim=1, largest=False).values.float().cpu())
        return torch.cat(chunks)

    def score(self, features: torch.Tensor) -> torch.Tensor:
        if self.bank is None:
            raise RuntimeError("KNNScorer.score called before fit")
        queries = self._prepare(check_features(features, "test features"))
        if queries.device.type not in ("cpu", "cuda"):
            queries = queries.cpu()
        backend = search_backend(queries.device, self.use_faiss, faiss_gpu_available())
        nearest = self._search(queries, backend)
        distances = 1.0 - nearest if self.metric == "cosine" else nearest.clamp_min(0).sqrt()
        return distances.mean(dim=1)
