"""kNN scoring speed: faiss vs the chunked torch fallback vs a naive full distance matrix.

Prints times and ratios measured in this one run (this machine is noisy: compare ratios, not
absolute seconds). Usage: python benchmarks/knn_search.py [--bank 20000 --queries 5000 --dim 512]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ood_nolabels.scorers.knn import KNNScorer


def timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def naive(bank: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Whole similarity matrix at once: the memory-unbounded reference."""
    sims = F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).T
    return 1 - sims.max(dim=1).values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bank", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    torch.manual_seed(0)
    bank, queries = torch.randn(args.bank, args.dim), torch.randn(args.queries, args.dim)

    t_naive, reference = timed(lambda: naive(bank, queries))
    rows = [("naive full matrix", t_naive)]
    for label, use_faiss in (("faiss IndexFlatIP", True), ("torch chunked", False)):
        scorer = KNNScorer(k=1, metric="cosine", use_faiss=use_faiss)
        seconds, scores = timed(lambda s=scorer: s.fit(bank).score(queries))
        torch.testing.assert_close(scores, reference, rtol=1e-4, atol=1e-4)
        rows.append((label, seconds))
    print(
        f"bank {args.bank} x {args.dim}, {args.queries} queries, k=1 cosine, "
        f"{torch.get_num_threads()} threads"
    )
    for label, seconds in rows:
        print(f"{label:>20}: {seconds:7.3f} s  ({t_naive / seconds:5.2f}x vs naive)")


if __name__ == "__main__":
    main()
