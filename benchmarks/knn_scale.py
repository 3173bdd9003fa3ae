"""kNN scoring as the bank grows: exact (faiss flat) vs the approximate IVF option, to a million.

For each bank size, a bank and queries drawn around the same random cluster centres (features of
images cluster; uniform noise in 768 dimensions would have no neighbours worth the name), cosine
k=1 as the scorers use it. Printed per size: the time to build each index and to score the
queries, the scorer against faiss's own flat search (the exact scorer adds its bank copy and
normalisation: the ratio shows what that costs), the IVF index's build (k-means on a sample,
then every row assigned to a cell), its rebuild from a saved detector's cells (what ``ood-score``
pays) and its search, the peak resident memory of the whole process while each ran (psutil,
sampled every 0.1 s; the bank and the queries included), and the approximate search's recall@1
against the exact one and its largest score error::

    python -m benchmarks.knn_scale                                  # 10k, 100k, 1M x 768
    python -m benchmarks.knn_scale --sizes 10000 --queries 1000     # a quick look
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

import faiss
import numpy as np
import psutil
import torch
import torch.nn.functional as F

from benchmarks.fashion_mnist_scale import MemorySampler
from ood_nolabels.core.tables import markdown_table
from ood_nolabels.scorers.knn import KNNScorer


def clustered(n: int, centres: torch.Tensor, seed: int) -> torch.Tensor:
    """``n`` rows, each a random centre plus noise of the centres' own scale."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(centres), (n,), generator=gen)
    out = torch.empty(n, centres.shape[1])
    for start in range(0, n, 100_000):  # bounded temporaries at a million rows
        rows = picks[start : start + 100_000]
        out[start : start + len(rows)] = centres[rows] + 0.5 * torch.randn(
            len(rows), centres.shape[1], generator=gen
        )
    return out


def measured(fn: Callable[[], object], budget: float = 10.0) -> tuple[object, float, float]:
    """``(result, seconds, peak resident GiB)`` of ``fn()``: the fastest of up to 3 calls while
    they take under ``budget`` seconds in all (a sub-second call on a shared machine is noisy)."""
    times, peak, spent, result = [], 0, 0.0, None
    while len(times) < 3 and (not times or spent < budget):
        result = None  # the next call's memory should not include this one's result
        gc.collect()
        with MemorySampler(interval=0.1) as memory:
            start = time.perf_counter()
            result = fn()
            end = time.perf_counter()
        times.append(end - start)
        spent += end - start
        rss = max(memory.peak(start, end), psutil.Process().memory_info().rss)  # short calls too
        peak = max(peak, rss)
    return result, min(times), peak / 2**30


def one_size(n: int, queries: torch.Tensor, centres: torch.Tensor, nlist: int, nprobe: int):
    bank = clustered(n, centres, seed=1)
    rows = []

    def flat_search():
        normalised = F.normalize(bank, dim=1).numpy()
        index = faiss.IndexFlatIP(normalised.shape[1])
        index.add(normalised)
        return index.search(F.normalize(queries, dim=1).numpy(), 1)

    (flat_sims, flat_ids), flat_s, flat_mem = measured(flat_search)
    rows.append(["faiss IndexFlatIP (reference)", f"{flat_s:.3g}", "1.00", f"{flat_mem:.2f}"])
    exact_scores, exact_s, exact_mem = measured(lambda: KNNScorer(k=1).fit(bank).score(queries))
    rows.append(["exact scorer", f"{exact_s:.3g}", f"{exact_s / flat_s:.2f}", f"{exact_mem:.2f}"])
    ivf = KNNScorer(k=1, nlist=nlist, nprobe=nprobe)
    _, build_s, build_mem = measured(lambda: ivf.fit(bank))
    ivf_scores, search_s, search_mem = measured(lambda: ivf.score(queries))
    saved = ivf.state_dict()
    _, load_s, load_mem = measured(
        lambda: KNNScorer(k=1, nlist=nlist, nprobe=nprobe).load_state_dict(saved)
    )
    _, ids = ivf.index.search(F.normalize(queries, dim=1), 1)
    recall = float((ids[:, 0].numpy() == flat_ids[:, 0]).mean())
    error = float((ivf_scores - exact_scores).abs().max())
    rows.append(
        [
            f"IVF nlist={nlist} nprobe={nprobe}: build",
            f"{build_s:.3g}",
            f"{build_s / flat_s:.2f}",
            f"{build_mem:.2f}",
        ]
    )
    rows.append(
        [
            f"IVF nlist={nlist} nprobe={nprobe}: load (saved cells)",
            f"{load_s:.3g}",
            f"{load_s / flat_s:.2f}",
            f"{load_mem:.2f}",
        ]
    )
    rows.append(
        [
            f"IVF nlist={nlist} nprobe={nprobe}: search",
            f"{search_s:.3g}",
            f"{search_s / flat_s:.3f}",
            f"{search_mem:.2f}",
        ]
    )
    speedup = exact_s / (build_s + search_s), exact_s / search_s
    summary = [f"{n:,}", f"{recall:.4f}", f"{error:.2e}", f"{speedup[0]:.1f}", f"{speedup[1]:.1f}"]
    return [[f"{n:,}", *row] for row in rows], summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--centres", type=int, default=1_000)
    parser.add_argument("--nprobe", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    centres = torch.randn(args.centres, args.dim)
    queries = clustered(args.queries, centres, seed=2)
    timing, quality = [], []
    for n in args.sizes:
        nlist = 4 * int(np.sqrt(n))  # faiss's guideline: 4-16 sqrt(N) cells
        rows, summary = one_size(n, queries, centres, nlist, args.nprobe)
        timing += rows
        quality.append(summary)
    print(
        f"{args.queries:,} queries x {args.dim} dims, cosine k=1, {torch.get_num_threads()} "
        f"threads, {psutil.cpu_count()} CPUs\n"
    )
    header = ["bank", "step", "seconds", "x faiss flat", "peak memory (GiB)"]
    print(markdown_table(header, timing), "\n")
    header = [
        "bank",
        "IVF recall@1",
        "largest score error",
        "exact / IVF (build + search)",
        "exact / IVF (search)",
    ]
    print(markdown_table(header, quality))


if __name__ == "__main__":
    main()
