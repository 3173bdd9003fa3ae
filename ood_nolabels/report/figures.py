"""The figures a run leaves: PNG files under ``<run dir>/plots/`` and W&B images.

What is drawn is chosen by the ``plots`` config (every figure can be switched off); the data
comes from the run's :class:`~ood_nolabels.methods.RunResult`: per-image scores and features of
the scored model, the pretrained backbone's features (for the retrieval grid), the pseudo-labels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from ood_nolabels.core.metric_keys import EPOCH, FINAL, ood_metrics_of
from ood_nolabels.core.search import ExactIndex
from ood_nolabels.data.datamodule import OODDataModule
from ood_nolabels.data.splits import NORMAL_TEST, NORMAL_TRAIN
from ood_nolabels.methods.base import RunResult
from ood_nolabels.report import plots
from ood_nolabels.report.plots import FigureWriter

log = logging.getLogger(__name__)

SPLIT_LABELS = {NORMAL_TRAIN: "normal train", NORMAL_TEST: "normal test"}


@rank_zero_only
def write_diagnostics(
    result: RunResult,
    datamodule: OODDataModule,
    settings: Mapping,
    directory: Path,
    loggers: Sequence[Logger] = (),
    seed: int = 0,
) -> dict[str, Path]:
    """Draw every figure ``settings`` asks for and the run has data for; return their files."""
    save = FigureWriter(directory, loggers)
    final = result.evaluation
    steps = {
        "roc": lambda: score_figures(final.scores, plots.roc_figure, "roc", save),
        "histograms": lambda: score_figures(final.scores, plots.histogram_figure, "scores", save),
        "epochs": lambda: epoch_figure(result.metrics, save),
        "retrieval": lambda: retrieval_figure(result, datamodule, settings, save),
        "embedding": lambda: embedding_figure(result, settings, seed, save),
        "confusion": lambda: confusion_figure(result, datamodule, save),
        "auto_k": lambda: auto_k_figure(result, save),
    }
    needs_scores = {"roc", "histograms", "retrieval", "embedding"}
    for name, draw in steps.items():
        if not settings.get(name, False) or (name in needs_scores and final is None):
            continue
        start = time.perf_counter()
        draw()
        log.debug("plot %s: %.1f s", name, time.perf_counter() - start)
    return save.written


def score_figures(scores, draw, prefix: str, save: FigureWriter) -> None:
    """One figure per scorer from the per-image scores (normal test vs each OOD set)."""
    for scorer, splits in scores.items():
        ood = {name: values for name, values in splits.items() if name != NORMAL_TEST}
        save(f"{prefix}_{scorer}", draw(splits[NORMAL_TEST], ood, scorer))


def epoch_figure(metrics: Mapping[str, float], save: FigureWriter) -> None:
    aurocs = {k: v for k, v in ood_metrics_of(dict(metrics)).items() if k.metric == "auroc"}
    series: dict[str, dict[int, float]] = {}
    for key, value in aurocs.items():
        if key.scope == EPOCH:
            series.setdefault(f"{key.ood_set} / {key.scorer}", {})[key.epoch] = value
    if series:
        averaged = {f"{k.ood_set} / {k.scorer}": v for k, v in aurocs.items() if k.scope == FINAL}
        save("epoch_auroc", plots.epoch_figure(series, averaged))


def nearest(queries: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine distances and indices of the ``k`` nearest bank rows of each query (kNN's default
    metric), nearest first."""
    index = ExactIndex(F.normalize(bank.float(), dim=1), "ip")
    similarity, indices = index.search(F.normalize(queries.float(), dim=1), min(k, len(bank)))
    return 1.0 - similarity, indices


def retrieval_figure(
    result: RunResult, datamodule: OODDataModule, settings: Mapping, save: FigureWriter
) -> None:
    """Figure 2 of the paper: a few normal-test and OOD images and their nearest normal training
    images under the pretrained backbone (when the run kept its features) and the scored one."""
    features = {"scored model": result.evaluation.features}
    if result.reference_features is not None:
        features = {"pretrained": result.reference_features, "finetuned": features["scored model"]}
    images = datamodule.images
    count = int(settings.get("queries", 3))
    picks = [
        (split, int(i))
        for split in [NORMAL_TEST, *datamodule.ood_names]
        for i in np.linspace(0, len(images[split]) - 1, min(count, len(images[split])))
    ]
    queries = [(f"{split} {i}", images[split].get_image(i)) for split, i in picks]
    neighbours = {}
    for backbone, splits in features.items():
        query_features = torch.stack([splits[split][i] for split, i in picks])
        distances, found = nearest(
            query_features, splits[NORMAL_TRAIN], int(settings.get("neighbours", 4))
        )
        neighbours[backbone] = [
            [
                (images[NORMAL_TRAIN].get_image(int(j)), float(d))
                for j, d in zip(row, gaps, strict=True)
            ]
            for row, gaps in zip(found, distances, strict=True)
        ]
    save("retrieval", plots.retrieval_figure(queries, neighbours))


def embedding_figure(result: RunResult, settings: Mapping, seed: int, save: FigureWriter) -> None:
    """t-SNE (after PCA to 50 dimensions) of a fixed random subset of the scored features."""
    splits = result.evaluation.features
    groups: list[str] = []
    for split, features in splits.items():
        if split == NORMAL_TRAIN and result.train_labels is not None:
            groups += [f"cluster {int(c)}" for c in result.train_labels]
        else:
            groups += [SPLIT_LABELS.get(split, split)] * len(features)
    features = torch.cat(list(splits.values())).float().numpy()
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(features))[: int(settings.get("max_points", 1000))]
    keep.sort()
    reduced = PCA(n_components=min(50, *features[keep].shape), random_state=seed)
    points = reduced.fit_transform(features[keep])
    perplexity = min(30.0, (len(keep) - 1) / 3)
    embedded = TSNE(perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    ood_sets = [name for name in splits if name not in (NORMAL_TRAIN, NORMAL_TEST)]
    save("embedding", plots.embedding_figure(embedded, np.asarray(groups)[keep], ood_sets))


def confusion_figure(result: RunResult, datamodule: OODDataModule, save: FigureWriter) -> None:
    """Pseudo-classes vs the true classes of the normal training images, when both exist."""
    truth = datamodule.train_labels()
    if result.train_labels is not None and truth is not None:
        save("confusion", plots.confusion_figure(result.train_labels.numpy(), truth.numpy()))


def auto_k_figure(result: RunResult, save: FigureWriter) -> None:
    """``K=auto``: the eigengap curve the number of clusters was read from."""
    choice = result.k_choice
    if choice is not None:
        save("auto_k", plots.k_curve_figure(choice.k_values, choice.gaps, choice.k))
