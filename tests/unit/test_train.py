"""The entry point's helpers: the optimized metric."""

import pytest

from ood_nolabels.train import optimized_value


def test_optimized_metric_that_the_run_did_not_produce_lists_the_produced_ones():
    metrics = {"ood/digits_6_9/knn/auroc": 0.97, "cluster/acc": 0.99}
    assert optimized_value(metrics, "ood/digits_6_9/knn/auroc") == 0.97
    assert optimized_value(metrics, None) is None
    with pytest.raises(KeyError, match="ood/digits_6_9/knn/auroc") as error:
        optimized_value(metrics, "ood/digits/knn/auroc")
    assert "cluster/acc" in str(error.value) and "not a metric of this run" in str(error.value)
