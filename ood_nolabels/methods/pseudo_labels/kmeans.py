"""The paper's ablation: k-means on the pretrained backbone's features. ``K=auto`` is chosen on
the kNN graph of those same features; nothing of stage 1 trains."""

from __future__ import annotations

from collections.abc import Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig

from ood_nolabels.core.cluster_metrics import cluster_metrics, prefixed
from ood_nolabels.core.kmeans import kmeans_clusters
from ood_nolabels.core.neighbors import mine_neighbors
from ood_nolabels.data.splits import NORMAL_TRAIN
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.pseudo_labels.base import (
    PseudoLabels,
    PseudoLabelSource,
    auto_k_metrics,
)

# The graph K=auto reads K from: each image's nearest neighbours, as many as stage 1 mines.
AUTO_K_NEIGHBORS = 20


class KMeansLabels(PseudoLabelSource):
    """K k-means clusters of the pretrained ``backbone``'s (a config) normal training features."""

    def __init__(
        self,
        backbone: DictConfig,
        num_clusters: int | str,
        seed: int,
        n_init: int = 10,
        auto_k: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(num_clusters, auto_k)
        self.backbone = backbone
        self.seed = seed
        self.n_init = n_init

    def labels(self, runtime: Runtime) -> PseudoLabels:
        model = instantiate(self.backbone)
        loaders = {NORMAL_TRAIN: runtime.datamodule.loader(NORMAL_TRAIN, model.transform())}
        features = runtime.extract(model, loaders)[NORMAL_TRAIN]

        def neighbors():
            return mine_neighbors(features, min(AUTO_K_NEIGHBORS, len(features) - 1))

        k, choice = self.resolve_k(runtime, neighbors)
        labels = kmeans_clusters(features, k, self.seed, self.n_init)
        truth = runtime.datamodule.train_labels()
        metrics = {} if truth is None else prefixed(cluster_metrics(labels, truth), "cluster")
        runtime.log_metrics(metrics)
        return PseudoLabels(labels, k, metrics | auto_k_metrics(choice), choice)
