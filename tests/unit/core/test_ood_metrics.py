"""OOD metrics vs scikit-learn: AUROC, FPR@95TPR, AUPR, and the ROC points of the figures."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torchmetrics.functional.classification import binary_auroc

from ood_nolabels.core.ood_metrics import ood_metrics, rank_scale, roc_points


def sklearn_reference(normal: np.ndarray, ood: np.ndarray) -> dict[str, float]:
    y = np.r_[np.zeros(len(normal)), np.ones(len(ood))]
    s = np.r_[normal, ood]
    fpr, tpr, _ = roc_curve(y, s)
    return {
        "auroc": roc_auc_score(y, s),
        "fpr95": fpr[np.argmax(tpr >= 0.95)],
        "aupr_in": average_precision_score(1 - y, -s),
        "aupr_out": average_precision_score(y, s),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_on_raw_distances_with_ties(seed):
    rng = np.random.default_rng(seed)
    # Distances far outside [0, 1], rounded so that many scores tie.
    normal = np.round(rng.normal(300, 80, 400) / 10) * 10
    ood = np.round(rng.normal(380, 90, 250) / 10) * 10
    ours = ood_metrics(torch.tensor(normal), torch.tensor(ood))
    reference = sklearn_reference(normal, ood)
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, abs=1e-6), name


def test_plain_torchmetrics_would_be_wrong_on_raw_distances():
    """The trap the rank transform avoids: sigmoid saturation ties every large distance."""
    normal = torch.tensor([100.0, 200.0, 300.0])
    ood = torch.tensor([250.0, 400.0, 500.0])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    naive = float(binary_auroc(torch.cat([normal, ood]), labels))
    y = np.r_[np.zeros(3), np.ones(3)]
    truth = roc_auc_score(y, np.r_[normal.numpy(), ood.numpy()])
    assert naive != pytest.approx(truth)
    assert ood_metrics(normal, ood)["auroc"] == pytest.approx(truth)


def test_perfect_and_inverted_separation():
    normal, ood = torch.arange(10.0), torch.arange(10.0) + 100
    perfect = ood_metrics(normal, ood)
    assert perfect == pytest.approx({"auroc": 1.0, "fpr95": 0.0, "aupr_in": 1.0, "aupr_out": 1.0})
    inverted = ood_metrics(ood, normal)
    assert inverted["auroc"] == pytest.approx(0.0)
    assert inverted["fpr95"] == pytest.approx(1.0)


def test_rank_scale_keeps_order_and_ties():
    scores = torch.tensor([5.0, -3.0, 5.0, 1e6])
    assert rank_scale(scores).tolist() == [0.5, 0.0, 0.5, 1.0]


def test_rejects_nan_and_empty():
    with pytest.raises(ValueError, match="NaN"):
        ood_metrics(torch.tensor([1.0, float("nan")]), torch.tensor([2.0]))
    with pytest.raises(ValueError, match="at least one"):
        ood_metrics(torch.tensor([]), torch.tensor([2.0]))


def test_roc_points_integrate_to_sklearns_auroc():
    generator = torch.Generator().manual_seed(0)
    normal = torch.randn(200, generator=generator)
    ood = torch.randn(150, generator=generator) + 1.0
    ood[:20] = normal[:20]  # ties between the sets
    fpr, tpr = roc_points(normal, ood)
    labels = np.r_[np.zeros(200), np.ones(150)]
    expected = roc_auc_score(labels, np.r_[normal.numpy(), ood.numpy()])
    assert float(torch.trapezoid(tpr.double(), fpr.double())) == pytest.approx(expected, abs=1e-6)
