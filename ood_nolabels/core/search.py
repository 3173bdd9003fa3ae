"""The one exact nearest-neighbour search: neighbour mining, the kNN scorer and the figures use it.

An :class:`ExactIndex` holds a bank of vectors and returns, for each query, the ``k`` bank rows
with the largest inner product (``"ip"``: cosine similarity when both sides are L2-normalised) or
the smallest squared Euclidean distance (``"l2"``). It searches with an exact faiss flat index when
faiss is installed (a GPU index for queries on a GPU when faiss has GPU support), otherwise with a
chunked torch matmul whose memory is bounded by ``chunk_size`` x bank size. Every backend returns
the same neighbours up to ties and rounding.
"""

from __future__ import annotations

import torch

try:
    import faiss
except ImportError:  # faiss is optional: the torch path gives the same neighbours
    faiss = None

METRICS = ("ip", "l2")


def faiss_gpu_available() -> bool:
    """A faiss build with GPU support (the ``gpu`` extra, faiss-gpu) and a GPU it can see."""
    return faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def search_backend(device: torch.device, use_faiss: bool, faiss_gpu: bool) -> str:
    """Where the search runs, given where the query vectors live.

    Queries on a CUDA device are searched there: by a faiss GPU index when faiss has GPU support,
    otherwise by the chunked torch matmul on that device. Anywhere else the exact CPU faiss index
    is used (the default), or the torch path when faiss is off or missing.
    """
    if device.type == "cuda":
        return "faiss-gpu" if use_faiss and faiss_gpu else "torch"
    return "faiss" if use_faiss else "torch"


class ExactIndex:
    """Exact k-NN over ``bank`` ``(N, D)``, kept on the CPU (copies live on other devices)."""

    def __init__(
        self,
        bank: torch.Tensor,
        metric: str = "ip",
        use_faiss: bool = True,
        chunk_size: int = 1024,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown search metric {metric!r}; expected one of {METRICS}")
        if bank.ndim != 2:
            raise ValueError(f"the bank must be (N, D), got shape {tuple(bank.shape)}")
        self.bank = bank.detach().float().cpu().contiguous()
        self.metric = metric
        self.use_faiss = use_faiss and faiss is not None
        self.chunk_size = chunk_size
        self.index = None
        self._gpu_index = None
        self._device_banks: dict[torch.device, torch.Tensor] = {}
        if self.use_faiss:
            index_type = faiss.IndexFlatIP if metric == "ip" else faiss.IndexFlatL2
            self.index = index_type(self.bank.shape[1])
            self.index.add(self.bank.numpy())

    def __len__(self) -> int:
        return len(self.bank)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values, indices)`` ``(Q, k)``, best first: similarities (``ip``) or squared
        distances (``l2``) on the CPU, and bank row indices."""
        if not 1 <= k <= len(self.bank):
            raise ValueError(f"k must be in [1, {len(self.bank)}] (the bank size), got {k}")
        queries = queries.detach().float()
        if queries.device.type not in ("cpu", "cuda"):
            queries = queries.cpu()
        backend = search_backend(queries.device, self.use_faiss, faiss_gpu_available())
        if backend == "faiss-gpu":
            if self._gpu_index is None:
                device = queries.device.index or 0
                self._gpu_index = faiss.index_cpu_to_gpu(
                    faiss.StandardGpuResources(), device, self.index
                )
            return self._faiss_search(self._gpu_index, queries, k)
        if backend == "faiss":
            return self._faiss_search(self.index, queries, k)
        return self._torch_search(queries.contiguous(), k)

    @staticmethod
    def _faiss_search(index, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        values, indices = index.search(queries.cpu().contiguous().numpy(), k)
        return torch.from_numpy(values), torch.from_numpy(indices).long()

    def _torch_search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if queries.device not in self._device_banks:
            self._device_banks[queries.device] = self.bank.to(queries.device)
        bank = self._device_banks[queries.device]
        values, indices = [], []
        for chunk in queries.split(self.chunk_size):
            if self.metric == "ip":
                found = (chunk @ bank.T).topk(k, dim=1)
                values.append(found.values.cpu())
            else:
                squared = torch.cdist(chunk.double(), bank.double()).square()
                found = squared.topk(k, dim=1, largest=False)
                values.append(found.values.float().cpu())
            indices.append(found.indices.cpu())
        return torch.cat(values), torch.cat(indices)


# faiss's own default is 256, its warning threshold 39 points per cell.
KMEANS_POINTS_PER_CELL = 64


def kmeans_sample(bank: torch.Tensor, limit: int) -> torch.Tensor:
    """At most ``limit`` rows of ``bank``, a seeded random choice in bank order (all when fewer)."""
    if len(bank) <= limit:
        return bank
    rows = torch.randperm(len(bank), generator=torch.Generator().manual_seed(0))[:limit]
    return bank[rows.sort().values]


class IVFIndex:
    """Approximate k-NN over ``bank``: a faiss inverted-file index (``IndexIVFFlat``).

    The bank is split into ``nlist`` cells by k-means; a query is compared only with the rows of
    its ``nprobe`` nearest cells, so a search costs about ``nprobe / nlist`` of an exact one. For
    banks too large for exact search (a million images); recall against :class:`ExactIndex` is
    measured by ``benchmarks/knn_scale.py``. Needs faiss.

    k-means sees at most :data:`KMEANS_POINTS_PER_CELL` rows per cell (a seeded sample; all of a
    small bank), which makes building a million-row index minutes faster and changes the cells
    little. ``centroids`` (from :attr:`centroids` of an earlier index of the same bank) skip
    k-means altogether: a loaded detector only assigns its bank to the saved cells.
    """

    def __init__(
        self,
        bank: torch.Tensor,
        metric: str = "ip",
        nlist: int = 1024,
        nprobe: int = 16,
        centroids: torch.Tensor | None = None,
    ) -> None:
        if faiss is None:
            raise ImportError(
                "the approximate kNN search (scorer.knn.nlist) needs faiss: pip install faiss-cpu, "
                "or set scorer.knn.nlist=null for the exact search"
            )
        if metric not in METRICS:
            raise ValueError(f"unknown search metric {metric!r}; expected one of {METRICS}")
        if bank.ndim != 2:
            raise ValueError(f"the bank must be (N, D), got shape {tuple(bank.shape)}")
        if not 1 <= nlist <= len(bank):
            raise ValueError(
                f"nlist={nlist} cells for {len(bank)} bank rows: use 1 <= nlist <= the bank size "
                "(about sqrt(N) to 16 sqrt(N)), or nlist=null for the exact search"
            )
        if not 1 <= nprobe <= nlist:
            raise ValueError(f"nprobe={nprobe} must be in [1, nlist={nlist}]")
        self.bank = bank.detach().float().cpu().contiguous()
        self.metric = metric
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        dim = self.bank.shape[1]
        quantizer = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
        if centroids is not None:
            if tuple(centroids.shape) != (nlist, dim):
                raise ValueError(
                    f"saved IVF centroids have shape {tuple(centroids.shape)}, expected "
                    f"({nlist}, {dim}): the detector was saved with another scorer.knn.nlist"
                )
            quantizer.add(centroids.detach().float().cpu().contiguous().numpy())
        self.index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
        if centroids is None:
            self.index.cp.seed = 0  # k-means initialisation: the same cells for the same bank
            self.index.train(kmeans_sample(self.bank, KMEANS_POINTS_PER_CELL * nlist).numpy())
        self.index.add(self.bank.numpy())
        self.index.nprobe = nprobe
        self._quantizer = quantizer  # faiss does not own it: keep it alive with the index

    def __len__(self) -> int:
        return len(self.bank)

    @property
    def centroids(self) -> torch.Tensor:
        """The cells' centres ``(nlist, D)``: with the bank, all a saved index needs."""
        return torch.from_numpy(self._quantizer.reconstruct_n(0, self._quantizer.ntotal))

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`ExactIndex.search`, on the CPU. A query whose probed cells hold fewer than
        ``k`` rows has no answer: an error, not a made-up distance."""
        if not 1 <= k <= len(self.bank):
            raise ValueError(f"k must be in [1, {len(self.bank)}] (the bank size), got {k}")
        values, indices = ExactIndex._faiss_search(self.index, queries.detach().float().cpu(), k)
        short = int((indices < 0).any(dim=1).sum())
        if short:
            raise ValueError(
                f"{short} queries found fewer than k={k} bank rows in their nprobe="
                f"{self.index.nprobe} cells: raise scorer.knn.nprobe (or lower nlist)"
            )
        return values, indices
