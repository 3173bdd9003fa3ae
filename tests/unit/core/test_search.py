"""Where the kNN search runs: with the features, with what is installed."""

import pytest
import torch

from ood_nolabels.core.search import search_backend


@pytest.mark.parametrize(
    "device, use_faiss, faiss_gpu, expected",
    [
        ("cpu", True, False, "faiss"),
        ("cpu", True, True, "faiss"),  # CPU features stay with the exact CPU index
        ("cpu", False, True, "torch"),
        ("cuda", True, True, "faiss-gpu"),
        ("cuda", True, False, "torch"),  # faiss-cpu installed: search on the GPU with torch
        ("cuda", False, True, "torch"),
    ],
)
def test_knn_search_runs_where_the_features_live(device, use_faiss, faiss_gpu, expected):
    assert search_backend(torch.device(device), use_faiss, faiss_gpu) == expected
