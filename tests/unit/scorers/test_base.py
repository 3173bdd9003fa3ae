"""Every scorer's state: restored, it scores exactly as the fitted one; bad states are refused."""

import pytest
import torch

from ood_nolabels.scorers.knn import KNNScorer
from ood_nolabels.scorers.mahalanobis import MahalanobisScorer


@pytest.mark.parametrize(
    "scorer",
    [
        KNNScorer(k=1, metric="cosine"),
        KNNScorer(k=3, metric="l2", use_faiss=False),
        MahalanobisScorer(shrinkage=0.1),
    ],
    ids=["knn-cosine-faiss", "knn-l2-torch", "mahalanobis"],
)
def test_a_restored_scorer_scores_exactly_as_the_fitted_one(scorer):
    torch.manual_seed(0)
    train, test = torch.randn(200, 12), torch.randn(30, 12) * 2
    fitted = scorer.fit(train, torch.arange(200) % 3)
    restored = type(scorer)(**vars_of(scorer)).load_state_dict(fitted.state_dict())
    assert torch.equal(restored.score(test), fitted.score(test))


def vars_of(scorer):
    if isinstance(scorer, KNNScorer):
        return dict(k=scorer.k, metric=scorer.metric, use_faiss=scorer.use_faiss)
    return dict(shrinkage=scorer.shrinkage)


def test_scorer_state_errors():
    with pytest.raises(RuntimeError, match="before fit"):
        KNNScorer().state_dict()
    with pytest.raises(RuntimeError, match="before fit"):
        MahalanobisScorer().state_dict()
    with pytest.raises(ValueError, match="expected \\['bank'\\]"):
        KNNScorer().load_state_dict({"means": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="do not fit together"):
        MahalanobisScorer().load_state_dict({"means": torch.zeros(2, 3), "precision": torch.eye(4)})
