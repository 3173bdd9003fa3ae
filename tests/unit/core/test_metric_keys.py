"""Metric names: parsed and written back."""

import pytest

from ood_nolabels.core.metric_keys import MetricKey


def test_metric_keys_round_trip():
    for name in (
        "ood/cifar100/knn/auroc",
        "ood_epoch3/svhn/mahalanobis/fpr95",
        "ood_epoch_mean/lsun/knn/aupr_in",
    ):
        assert str(MetricKey.parse(name)) == name
    key = MetricKey.parse("ood_epoch12/a/b/c")
    assert (key.scope, key.epoch, key.series) == ("ood_epoch", 12, "ood_epoch/a/b/c")
    assert MetricKey.parse("cluster/acc") is None
    assert MetricKey.parse("ood/too/many/parts/here") is None
    with pytest.raises(ValueError, match="without '/'"):
        MetricKey("a/b", "knn", "auroc")
