"""The paper's ablation: k-means on the pretrained backbone's features."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from ood_nolabels.clustering.kmeans import kmeans_clusters
from ood_nolabels.clustering.metrics import cluster_metrics, prefixed
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.pseudo_labels import PseudoLabels
from ood_nolabels.runtime import Runtime
from ood_nolabels.stages.base import check_num_clusters


def kmeans_labels(
    runtime: Runtime, backbone: DictConfig, num_clusters: int, seed: int, n_init: int = 10
) -> PseudoLabels:
    """K k-means clusters of the pretrained ``backbone``'s (a config) normal training features."""
    check_num_clusters(num_clusters)
    model = instantiate(backbone)
    loaders = {NORMAL_TRAIN: runtime.datamodule.loader(NORMAL_TRAIN, model.transform())}
    features = runtime.extract(model, loaders)[NORMAL_TRAIN]
    labels = kmeans_clusters(features, num_clusters, seed, n_init)
    truth = runtime.datamodule.train_labels()
    metrics = {} if truth is None else prefixed(cluster_metrics(labels, truth), "cluster")
    runtime.log_metrics(metrics)
    return PseudoLabels(labels, metrics)
