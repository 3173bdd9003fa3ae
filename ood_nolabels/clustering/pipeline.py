"""Stage 1 of the paper: SimCLR -> neighbour mining -> SCAN -> self-label -> pseudo-labels.

Each stage writes its artifact into ``paths.artifact_dir/<stage>-<hash>``, where the hash covers
the stage's own config and its upstream stage's directory name. A rerun with the same upstream
config loads the artifact instead of training again (so sweeps over scorers or downstream
settings train stage 1 once), and an interrupted stage resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EMAWeightAveraging
from omegaconf import DictConfig
from sklearn.cluster import KMeans

from ood_nolabels.clustering.metrics import cluster_metrics
from ood_nolabels.clustering.mining import mine_neighbors, neighbor_purity
from ood_nolabels.data.augment import PairedViews, TwoViews
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.data.images import IndexedDataset, NeighborsDataset
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.runner import RunContext
from ood_nolabels.stages.scan import ClusterModel, SCANModule, check_num_clusters
from ood_nolabels.stages.selflabel import SelfLabelModule
from ood_nolabels.stages.simclr import SimCLRModule
from ood_nolabels.utils.artifacts import read_json, stage_dir, write_json

log = logging.getLogger(__name__)

STAGES = ("simclr", "mining", "scan", "selflabel")


@dataclass
class ClusteringResult:
    """The final clustering model's backbone, its pseudo-labels (None before SCAN), metrics."""

    backbone: Backbone
    pseudo_labels: torch.Tensor | None
    metrics: dict[str, float] = field(default_factory=dict)


def prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}/{name}": value for name, value in metrics.items()}


def kmeans_clusters(features: torch.Tensor, k: int, seed: int, n_init: int = 10) -> torch.Tensor:
    """k-means on L2-normalised features (cosine geometry, as the kNN scorer and the mining)."""
    clusterer = KMeans(k, n_init=n_init, random_state=seed)
    return torch.as_tensor(clusterer.fit_predict(F.normalize(features, dim=1).numpy())).long()


def augmentation(config: DictConfig, backbone: Backbone):
    """Instantiate an augmentation partial for the backbone's input size and statistics."""
    return instantiate(config)(image_size=backbone.image_size, mean=backbone.mean, std=backbone.std)


class ClusteringPipeline:
    """Runs the four stages for one run context; ``cfg`` is the ``clustering`` config group."""

    def __init__(self, ctx: RunContext, cfg: DictConfig, num_clusters: int) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.num_clusters = check_num_clusters(num_clusters)
        if cfg.stop_after not in STAGES:
            raise ValueError(f"clustering.stop_after={cfg.stop_after!r}; expected one of {STAGES}")
        ctx.datamodule.setup()
        self.images = ctx.datamodule.images[NORMAL_TRAIN]
        self.labels = ctx.datamodule.train_labels()
        self.metrics: dict[str, float] = {}

    def run(self) -> ClusteringResult:
        backbone, simclr_dir = self.simclr()
        neighbors, mining_dir = self.mining(backbone, simclr_dir)
        if self.cfg.stop_after in ("simclr", "mining"):
            return self.finish(ClusteringResult(backbone, None))
        scan_model, scan_dir = self.scan(backbone, neighbors, mining_dir)
        if self.cfg.stop_after == "scan":
            labels = self.cluster_predictions("scan", scan_model, scan_dir)
            return self.finish(ClusteringResult(backbone, labels))
        labels = self.selflabel(scan_model, scan_dir)
        return self.finish(ClusteringResult(scan_model.backbone, labels))

    def finish(self, result: ClusteringResult) -> ClusteringResult:
        if result.pseudo_labels is not None and self.labels is not None:
            self.metrics |= prefixed(cluster_metrics(result.pseudo_labels, self.labels), "cluster")
        result.metrics = dict(self.metrics)
        self.ctx.log_metrics(result.metrics)
        return result

    # -- stages -----------------------------------------------------------------------------
    def simclr(self) -> tuple[Backbone, Path]:
        cfg = self.cfg.simclr
        backbone: Backbone = instantiate(cfg.backbone)
        directory = stage_dir(
            self.ctx.artifact_dir, "simclr", self.ctx.cfg.dataset, cfg, self.ctx.cfg.seed
        )
        weights = directory / "backbone.pt"
        if weights.exists():
            log.info("SimCLR: reusing %s", weights)
            backbone.load_state_dict(torch.load(weights, map_location="cpu"))
            return backbone, directory
        views = TwoViews(augmentation(cfg.augment, backbone))
        module = SimCLRModule(
            backbone,
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(cfg.scheduler),
            **cfg.module,
        )
        loader = self.ctx.train_loader(IndexedDataset(self.images, views), cfg.batch_size)
        self.ctx.fit(module, loader, cfg.epochs, directory)
        self.ctx.save(backbone.state_dict(), weights)
        return backbone, directory

    def mining(self, backbone: Backbone, simclr_dir: Path) -> tuple[torch.Tensor, Path]:
        cfg = self.cfg.mining
        directory = stage_dir(
            self.ctx.artifact_dir, "mining", simclr_dir.name, cfg, self.num_clusters
        )
        path, metrics_path = directory / "neighbors.pt", directory / "metrics.json"
        if path.exists():
            log.info("mining: reusing %s", path)
            self.metrics |= read_json(metrics_path)
            return torch.load(path), directory
        features = self.ctx.extract(backbone, backbone.transform(), [NORMAL_TRAIN])[NORMAL_TRAIN]
        neighbors = mine_neighbors(features, cfg.num_neighbors, use_faiss=cfg.use_faiss)
        metrics = {}
        if self.labels is not None:
            metrics["cluster/mining/neighbor_purity"] = neighbor_purity(neighbors, self.labels)
            predictions = kmeans_clusters(features, self.num_clusters, self.ctx.cfg.seed)
            metrics |= prefixed(cluster_metrics(predictions, self.labels), "cluster/simclr_kmeans")
        self.metrics |= metrics
        write_json(metrics_path, metrics)
        self.ctx.save(neighbors, path)
        return neighbors, directory

    def scan(
        self, backbone: Backbone, neighbors: torch.Tensor, mining_dir: Path
    ) -> tuple[ClusterModel, Path]:
        cfg = self.cfg.scan
        directory = stage_dir(self.ctx.artifact_dir, "scan", mining_dir.name, cfg)
        module = SCANModule(
            backbone,
            self.num_clusters,
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(cfg.scheduler),
            **cfg.module,
        )
        weights = directory / "scan.pt"
        if weights.exists():
            log.info("SCAN: reusing %s", weights)
            module.load_state_dict(torch.load(weights, map_location="cpu"))
        else:
            dataset = NeighborsDataset(self.images, neighbors, augmentation(cfg.augment, backbone))
            loader = self.ctx.train_loader(dataset, cfg.batch_size)
            self.ctx.fit(module, loader, cfg.epochs, directory)
            self.ctx.save(module.state_dict(), weights)
        return module.cluster_model(), directory

    def selflabel(self, model: ClusterModel, scan_dir: Path) -> torch.Tensor:
        cfg = self.cfg.selflabel
        self.cluster_predictions("scan", model, scan_dir)
        directory = stage_dir(self.ctx.artifact_dir, "selflabel", scan_dir.name, cfg)
        weights = directory / "selflabel.pt"
        if weights.exists():
            log.info("self-label: reusing %s", weights)
            model.load_state_dict(torch.load(weights, map_location="cpu"))
        else:
            views = PairedViews(
                augmentation(cfg.weak_augment, model.backbone),
                augmentation(cfg.strong_augment, model.backbone),
            )
            module = SelfLabelModule(
                model,
                optimizer=instantiate(cfg.optimizer),
                scheduler=instantiate(cfg.scheduler),
                **cfg.module,
            )
            ema = [EMAWeightAveraging(decay=cfg.ema_decay)] if cfg.ema_decay else []
            loader = self.ctx.train_loader(IndexedDataset(self.images, views), cfg.batch_size)
            self.ctx.fit(module, loader, cfg.epochs, directory, callbacks=ema)
            self.ctx.save(model.state_dict(), weights)
        return self.cluster_predictions("selflabel", model, directory)

    def cluster_predictions(self, stage: str, model: ClusterModel, directory: Path) -> torch.Tensor:
        """Cluster assignments of the normal training images (cached next to the weights)."""
        path, metrics_path = directory / "pseudo_labels.pt", directory / "metrics.json"
        if path.exists():
            self.metrics |= read_json(metrics_path)
            return torch.load(path)
        transform = model.backbone.transform()
        logits = self.ctx.extract(model, transform, [NORMAL_TRAIN])[NORMAL_TRAIN]
        labels = logits.argmax(dim=1)
        counts = torch.bincount(labels, minlength=self.num_clusters)
        metrics = {f"cluster/{stage}/empty_clusters": float((counts == 0).sum())}
        if self.labels is not None:
            metrics |= prefixed(cluster_metrics(labels, self.labels), f"cluster/{stage}")
        self.metrics |= metrics
        write_json(metrics_path, metrics)
        self.ctx.save(labels, path)
        return labels
