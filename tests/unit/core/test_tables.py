"""The results table printed at the end of a run."""

from ood_nolabels.core.tables import epoch_auroc_table, results_table


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


def test_epoch_table_shows_each_epoch_auroc_and_drift():
    metrics = {
        "ood_epoch0/fm/knn/auroc": 0.80,
        "ood_epoch1/fm/knn/auroc": 0.84,
        "ood_epoch_mean/fm/knn/auroc": 0.82,
        "ood/fm/knn/auroc": 0.85,
        "drift_epoch0/linear_cka": 0.91234,
        "drift_epoch1/linear_cka": 0.8,
        "drift/linear_cka": 0.85,
    }
    header, _, auroc, drift = epoch_auroc_table(metrics).splitlines()
    assert [c.strip() for c in header.split("|")[1:-1]] == [
        "OOD set / scorer",
        "epoch 0",
        "epoch 1",
        "epoch mean",
        "averaged",
    ]
    assert [c.strip() for c in auroc.split("|")[1:-1]] == [
        "fm / knn",
        "80.0",
        "84.0",
        "82.0",
        "85.0",
    ]
    assert [c.strip() for c in drift.split("|")[1:-1]] == [
        "drift: linear_cka",
        "0.912",
        "0.800",
        "-",
        "0.850",
    ]
    assert epoch_auroc_table({"ood/fm/knn/auroc": 0.85}) == ""  # no epochs: no table
