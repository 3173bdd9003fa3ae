"""The kNN scorer vs brute force."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ood_nolabels.core import search
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


@pytest.mark.skipif(search.faiss is None, reason="needs faiss")
def test_ivf_with_every_cell_probed_is_exact_and_with_few_cells_close():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(20, 16, generator=gen) * 3
    train = centres.repeat(50, 1) + torch.randn(1000, 16, generator=gen)
    test = centres.repeat(5, 1) + torch.randn(100, 16, generator=gen)
    exact = KNNScorer(k=1).fit(train).score(test)
    everything = KNNScorer(k=1, nlist=20, nprobe=20).fit(train).score(test)
    assert torch.allclose(everything, exact, atol=1e-5)
    _, exact_ids = search.ExactIndex(F.normalize(train), "ip").search(F.normalize(test), 1)
    ivf = search.IVFIndex(F.normalize(train), "ip", nlist=20, nprobe=2)
    _, ivf_ids = ivf.search(F.normalize(test), 1)
    assert (ivf_ids == exact_ids).float().mean() >= 0.9  # recall@1 with a tenth of the cells
    # an approximate distance is never below the exact one: it is a distance to some bank row
    approximate = KNNScorer(k=1, nlist=20, nprobe=2).fit(train).score(test)
    assert bool((approximate >= exact - 1e-5).all())


@pytest.mark.skipif(search.faiss is None, reason="needs faiss")
def test_ivf_settings_that_cannot_work_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"nprobe=8 must be in \[1, nlist=4\]"):
        KNNScorer(nlist=4, nprobe=8)
    with pytest.raises(ValueError, match="nlist=50 cells for 10 bank rows"):
        KNNScorer(nlist=50, nprobe=1).fit(torch.randn(10, 4))
    scorer = KNNScorer(k=5, nlist=10, nprobe=1).fit(torch.randn(10, 4))  # one row per cell
    with pytest.raises(ValueError, match="raise scorer.knn.nprobe"):
        scorer.score(torch.randn(3, 4))


@pytest.mark.skipif(search.faiss is None, reason="needs faiss")
def test_a_saved_ivf_scorer_scores_alike_after_loading():
    gen = torch.Generator().manual_seed(1)
    train, test = torch.randn(400, 8, generator=gen), torch.randn(50, 8, generator=gen)
    scorer = KNNScorer(k=2, nlist=16, nprobe=4).fit(train)
    loaded = KNNScorer(k=2, nlist=16, nprobe=4).load_state_dict(scorer.state_dict())
    assert torch.equal(loaded.score(test), scorer.score(test))


@pytest.mark.skipif(search.faiss is None, reason="needs faiss")
def test_a_loaded_ivf_scorer_reuses_the_saved_cells_without_kmeans(monkeypatch):
    gen = torch.Generator().manual_seed(2)
    train, test = torch.randn(600, 8, generator=gen), torch.randn(40, 8, generator=gen)
    scorer = KNNScorer(k=1, nlist=12, nprobe=3).fit(train)
    state = scorer.state_dict()
    assert state["centroids"].shape == (12, 8)
    trained = []
    original = search.faiss.IndexIVFFlat.train
    monkeypatch.setattr(
        search.faiss.IndexIVFFlat,
        "train",
        lambda self, x: trained.append(len(x)) or original(self, x),
    )
    loaded = KNNScorer(k=1, nlist=12, nprobe=3).load_state_dict(state)
    assert trained == []
    assert torch.equal(loaded.score(test), scorer.score(test))
    assert torch.equal(loaded.state_dict()["centroids"], state["centroids"])
    # a detector saved before the cells were kept: k-means again, on a sample of the bank
    older = KNNScorer(k=1, nlist=12, nprobe=3).load_state_dict({"bank": state["bank"]})
    assert trained == [len(train)]  # 600 rows < 64 per cell x 12 cells: all of them
    assert torch.equal(older.score(test), scorer.score(test))
    with pytest.raises(ValueError, match="saved with another scorer.knn.nlist"):
        KNNScorer(k=1, nlist=10, nprobe=3).load_state_dict(state)


@pytest.mark.skipif(search.faiss is None, reason="needs faiss")
def test_ivf_kmeans_sees_a_bounded_seeded_sample_of_a_large_bank(monkeypatch):
    trained = []
    original = search.faiss.IndexIVFFlat.train
    monkeypatch.setattr(
        search.faiss.IndexIVFFlat,
        "train",
        lambda self, x: trained.append(x.copy()) or original(self, x),
    )
    bank = F.normalize(torch.randn(2000, 4, generator=torch.Generator().manual_seed(3)))
    first = search.IVFIndex(bank, "ip", nlist=4, nprobe=4)
    search.IVFIndex(bank, "ip", nlist=4, nprobe=4)
    limit = search.KMEANS_POINTS_PER_CELL * 4
    assert [len(x) for x in trained] == [limit, limit]
    assert (trained[0] == trained[1]).all()  # the same sample, so the same cells
    rows = {tuple(row) for row in bank.numpy()}
    assert all(tuple(row) in rows for row in trained[0])  # rows of the bank, none made up
    assert len(first) == len(bank)  # every row is searched, not only the sample
    _, ids = first.search(bank[:50], 1)
    assert torch.equal(ids[:, 0], torch.arange(50))
