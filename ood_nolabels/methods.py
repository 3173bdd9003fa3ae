"""The methods a run can execute, selected with the ``method`` config group.

Each method takes the :class:`RunContext` and returns the run's metrics. Configs reference them
as Hydra partials (``_target_: ood_nolabels.methods.<name>``, ``_partial_: true``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from hydra.utils import instantiate

from ood_nolabels.callbacks.weight_averaging import EpochSnapshots, EpochWeightAveraging
from ood_nolabels.clustering.pipeline import ClusteringPipeline
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.data.images import IndexedDataset
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.runner import RunContext
from ood_nolabels.stages.finetune import FinetuneModule
from ood_nolabels.utils.artifacts import stage_dir


def dn2(ctx: RunContext) -> dict[str, float]:
    """DN2 baseline: kNN (or one-Gaussian Mahalanobis) on raw pretrained features."""
    return ctx.evaluate(instantiate(ctx.cfg.backbone))


def clustering(ctx: RunContext) -> dict[str, float]:
    """Stage 1 only (up to ``clustering.stop_after``): pseudo-labels and clustering metrics."""
    return ClusteringPipeline(ctx, ctx.cfg.clustering, ctx.cfg.K).run().metrics


def scan_features(ctx: RunContext) -> dict[str, float]:
    """The paper's "SCAN features" baseline: score with the final clustering model's features.

    Mahalanobis uses the pseudo-labels as classes.
    """
    result = ClusteringPipeline(ctx, ctx.cfg.clustering, ctx.cfg.K).run()
    return result.metrics | ctx.evaluate(result.backbone, train_labels=result.pseudo_labels)


def finetune_backbone(ctx: RunContext, backbone: Backbone, labels: torch.Tensor) -> list[Path]:
    """Finetune on the pseudo-labels with epoch-end weight averaging (cached by config + labels).

    Leaves the averaged weights in ``backbone``; returns the per-epoch weight files.
    """
    cfg = ctx.cfg.finetune
    labels_digest = hashlib.sha256(labels.numpy().tobytes()).hexdigest()
    directory = stage_dir(
        ctx.artifact_dir,
        "finetune",
        ctx.cfg.dataset,
        ctx.cfg.backbone,
        cfg,
        ctx.cfg.K,
        labels_digest,
        ctx.cfg.seed,
    )
    snapshots = EpochSnapshots(directory / "epochs")
    averaged = directory / "averaged.pt"
    if not averaged.exists():
        module = FinetuneModule(
            backbone,
            labels,
            ctx.cfg.K,
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(cfg.scheduler),
            freeze_bn_stats=cfg.freeze_bn_stats,
        )
        dataset = IndexedDataset(
            ctx.datamodule.images[NORMAL_TRAIN], backbone.transform(train=True, **cfg.augment)
        )
        ctx.fit(
            module,
            ctx.train_loader(dataset, cfg.batch_size),
            cfg.epochs,
            directory,
            callbacks=[EpochWeightAveraging(), snapshots],
        )
        ctx.save(backbone.state_dict(), averaged)
    backbone.load_state_dict(torch.load(averaged, map_location="cpu"))
    return [snapshots.path(epoch) for epoch in range(cfg.epochs)]


def epoch_mean(metrics: dict[str, float], epochs: int) -> dict[str, float]:
    """``ood_epoch_mean/...``: the mean over the per-epoch models, to compare with averaging."""
    first = {
        k.removeprefix("ood_epoch0/"): v for k, v in metrics.items() if k.startswith("ood_epoch0/")
    }
    return {
        f"ood_epoch_mean/{name}": sum(metrics[f"ood_epoch{e}/{name}"] for e in range(epochs))
        / epochs
        for name in first
    }


def pseudo_label_finetune(ctx: RunContext) -> dict[str, float]:
    """The paper's method: pseudo-labels -> finetune + weight averaging -> kNN / Mahalanobis.

    Mahalanobis uses the pseudo-classes. With ``finetune.evaluate_epochs`` every epoch's model
    is scored as well (``ood_epoch<e>/...``) next to the averaged one (``ood/...``).
    """
    backbone: Backbone = instantiate(ctx.cfg.backbone)
    labels, metrics = instantiate(ctx.cfg.pseudo_labels)(ctx, backbone)
    ctx.datamodule.setup()
    epoch_weights = finetune_backbone(ctx, backbone, labels)
    averaged = {k: v.clone() for k, v in backbone.state_dict().items()}
    if ctx.cfg.finetune.evaluate_epochs:
        for epoch, path in enumerate(epoch_weights):
            backbone.load_state_dict(torch.load(path, map_location="cpu"))
            metrics |= ctx.evaluate(backbone, labels, prefix=f"ood_epoch{epoch}")
        means = epoch_mean(metrics, len(epoch_weights))
        metrics |= means
        ctx.log_metrics(means)
        backbone.load_state_dict(averaged)
    return metrics | ctx.evaluate(backbone, labels)
