import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torchmetrics.functional.classification import binary_auroc

from ood_nolabels.core.ood_metrics import ood_metrics, rank_scale
from ood_nolabels.core.tables import results_table


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


def test_results_table_rows_and_percent():
    metrics = {
        "ood/svhn/knn/auroc": 0.9234,
        "ood/svhn/knn/fpr95": 0.5,
        "ood/svhn/knn/aupr_in": 0.8,
        "ood/svhn/knn/aupr_out": 0.7,
        "ood/cifar100/mahalanobis/auroc": 0.8,
        "train/loss": 1.0,
    }
    table = results_table(metrics).splitlines()
    assert "AUROC" in table[0] and "FPR@95TPR" in table[0]
    assert len(table) == 4  # header, separator, two rows
    assert "92.3" in table[3] and "svhn" in table[3]
    assert "cifar100" in table[2] and "-" in table[2]
