"""The results table printed at the end of a run."""

from ood_nolabels.core.tables import results_table


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
