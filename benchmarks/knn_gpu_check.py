"""GPU check of the kNN scorer: features on a GPU are searched there, with the CPU's results.

Fits a KNNScorer on random CPU features, scores the same queries from the CPU (faiss-cpu index)
and from the GPU (a faiss GPU index when faiss has GPU support, the ``gpu`` extra; otherwise the
torch matmul on the GPU), checks that both give the same distances and prints the backend and
times. Exits non-zero without a GPU. Usage: python benchmarks/knn_gpu_check.py [--bank 50000]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from ood_nolabels.core.search import faiss_gpu_available, search_backend
from ood_nolabels.scorers.knn import KNNScorer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bank", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 1
    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(args.bank, args.dim, generator=generator)
    queries = torch.randn(args.queries, args.dim, generator=generator)
    scorer = KNNScorer(k=1).fit(bank)
    backend = search_backend(torch.device("cuda"), scorer.use_faiss, faiss_gpu_available())
    start = time.perf_counter()
    on_cpu = scorer.score(queries)
    cpu_time = time.perf_counter() - start
    on_gpu_queries = queries.cuda()
    scorer.score(on_gpu_queries[:10])  # warm-up: index or bank copied to the GPU
    torch.cuda.synchronize()
    start = time.perf_counter()
    on_gpu = scorer.score(on_gpu_queries)
    gpu_time = time.perf_counter() - start
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-4, atol=1e-4)
    print(
        f"kNN {args.queries} x {args.bank} x {args.dim}: CPU faiss {cpu_time:.2f} s, "
        f"GPU backend {backend!r} {gpu_time:.2f} s, same distances (1e-4)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
