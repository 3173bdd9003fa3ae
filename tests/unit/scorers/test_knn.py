"""The kNN scorer vs brute force."""

import numpy as np
import pytest
import torch

from ood_nolabels.scorers.knn import KNNScorer


def brute_force_knn(train: np.ndarray, test: np.ndarray, k: int, metric: str) -> np.ndarray:
    if metric == "cosine":
        train = train / np.linalg.norm(train, axis=1, keepdims=True)
        test = test / np.linalg.norm(test, axis=1, keepdims=True)
        distances = 1 - test @ train.T
    else:
        distances = np.sqrt(((test[:, None, :] - train[None, :, :]) ** 2).sum(-1))
    return np.sort(distances, axis=1)[:, :k].mean(1)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("use_faiss", [True, False])
def test_knn_matches_brute_force(metric, k, use_faiss):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 16)) * 20 + 3
    test = rng.normal(size=(50, 16)) * 20 + 3
    scorer = KNNScorer(k=k, metric=metric, use_faiss=use_faiss, chunk_size=7)
    scores = scorer.fit(torch.tensor(train)).score(torch.tensor(test)).numpy()
    expected = brute_force_knn(train, test, k, metric)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


def test_knn_training_point_has_zero_distance():
    features = torch.randn(20, 8)
    scores = KNNScorer(k=1, metric="l2").fit(features).score(features)
    assert torch.allclose(scores, torch.zeros(20), atol=1e-3)


def test_knn_errors():
    with pytest.raises(ValueError, match="k must be"):
        KNNScorer(k=0)
    with pytest.raises(ValueError, match="unknown metric"):
        KNNScorer(metric="manhattan")
    with pytest.raises(RuntimeError, match="before fit"):
        KNNScorer().score(torch.randn(3, 4))
    with pytest.raises(ValueError, match="only 2 training"):
        KNNScorer(k=3).fit(torch.randn(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        KNNScorer().fit(torch.tensor([[1.0, float("nan")]]))
