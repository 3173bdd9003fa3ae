"""Diagnostic figures, as pure functions of arrays (matplotlib's object API: no GUI backend),
and :class:`FigureWriter`, which saves them as PNG files and W&B images.

Conventions: a higher anomaly score is more anomalous; OOD is the positive class of the ROC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from ood_nolabels.core.cluster_metrics import contingency, hungarian_matching
from ood_nolabels.core.ood_metrics import ood_metrics, roc_points

OOD_COLOURS = ("black", "red", "purple", "brown")


class FigureWriter:
    """Saves each figure as ``<directory>/<name>.png`` and logs it to the W&B loggers."""

    def __init__(self, directory: Path, loggers: Sequence[Logger] = ()) -> None:
        self.directory = directory
        self.loggers = [logger for logger in loggers if isinstance(logger, WandbLogger)]
        self.written: dict[str, Path] = {}

    def __call__(self, name: str, figure: Figure) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{name}.png"
        figure.savefig(path, dpi=110)
        for logger in self.loggers:
            logger.log_image(key=f"plots/{name}", images=[str(path)])
        self.written[name] = path


def roc_figure(normal: torch.Tensor, ood: Mapping[str, torch.Tensor], title: str) -> Figure:
    """ROC curve of normal-test vs each OOD set, AUROC in the legend."""
    figure = Figure(figsize=(4.5, 4.2), layout="constrained")
    axes = figure.add_subplot()
    for name, scores in ood.items():
        fpr, tpr = roc_points(normal, scores)
        auroc = ood_metrics(normal, scores)["auroc"]
        axes.plot(fpr.numpy(), tpr.numpy(), label=f"{name} (AUROC {100 * auroc:.1f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set(xlabel="false-positive rate (normal flagged)", ylabel="true-positive rate (OOD)")
    axes.set_title(title, fontsize=10)
    axes.legend(loc="lower right", fontsize=8)
    return figure


def histogram_figure(normal: torch.Tensor, ood: Mapping[str, torch.Tensor], title: str) -> Figure:
    """Score distributions of normal-test and each OOD set on shared bins."""
    figure = Figure(figsize=(5, 3.5), layout="constrained")
    axes = figure.add_subplot()
    everything = torch.cat([normal.flatten(), *(s.flatten() for s in ood.values())]).numpy()
    bins = np.histogram_bin_edges(everything, bins=40)
    axes.hist(normal.numpy(), bins=bins, density=True, alpha=0.6, label="normal test")
    for name, scores in ood.items():
        axes.hist(scores.numpy(), bins=bins, density=True, alpha=0.5, label=name)
    axes.set(xlabel="anomaly score (higher = more anomalous)", ylabel="density")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    return figure


def epoch_figure(
    epochs: Mapping[str, Mapping[int, float]], averaged: Mapping[str, float]
) -> Figure:
    """AUROC of each epoch's model (lines) and of the weight-averaged one (dashed, same colour)."""
    figure = Figure(figsize=(5.5, 3.8), layout="constrained")
    axes = figure.add_subplot()
    for index, (name, series) in enumerate(epochs.items()):
        colour = f"C{index}"
        xs = sorted(series)
        axes.plot(xs, [100 * series[x] for x in xs], marker="o", color=colour, label=name)
        if name in averaged:
            axes.axhline(100 * averaged[name], color=colour, linestyle="--", linewidth=1)
    axes.set(xlabel="epoch", ylabel="AUROC (%)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title("each epoch's model (lines) vs weight-averaged (dashed)", fontsize=10)
    axes.legend(fontsize=7)
    return figure


def show(axes, image: Image.Image) -> None:
    axes.imshow(image, cmap="gray" if image.mode in ("L", "I", "F") else None)


def retrieval_figure(
    queries: Sequence[tuple[str, Image.Image]],
    neighbours: Mapping[str, Sequence[Sequence[tuple[Image.Image, float]]]],
) -> Figure:
    """The paper's Figure 2: each query (row) and its nearest normal training images under each
    backbone (``neighbours[backbone][query]``: image and cosine distance), nearest first."""
    k = max(len(row) for rows in neighbours.values() for row in rows)
    columns = 1 + k * len(neighbours)
    figure = Figure(figsize=(1.1 * columns, 1.3 * len(queries) + 0.4), layout="constrained")
    grid = figure.subplots(len(queries), columns, squeeze=False)
    for row, (label, image) in enumerate(queries):
        show(grid[row, 0], image)
        grid[row, 0].set_ylabel(label, fontsize=7)
        for block, (backbone, rows) in enumerate(neighbours.items()):
            for j, (neighbour, distance) in enumerate(rows[row]):
                cell = grid[row, 1 + block * k + j]
                show(cell, neighbour)
                cell.set_xlabel(f"{distance:.3f}", fontsize=6, labelpad=1)
                if row == 0 and j == 0:
                    cell.set_title(f"{backbone} (cosine distance)", fontsize=8, loc="left")
    for cell in grid.flat:
        cell.set_xticks([])
        cell.set_yticks([])
    grid[0, 0].set_title("query", fontsize=8)
    return figure


def embedding_figure(points: np.ndarray, groups: Sequence[str], ood_sets: Sequence[str]) -> Figure:
    """A 2-D embedding: normal images as dots coloured by group (pseudo-class, normal test),
    images of the ``ood_sets`` as crosses."""
    figure = Figure(figsize=(5.5, 4.8), layout="constrained")
    axes = figure.add_subplot()
    groups = np.asarray(groups)
    normal = sorted(set(groups.tolist()) - set(ood_sets), key=lambda g: (len(g), g))
    for index, name in enumerate(normal):  # pseudo-classes in order, then the normal test set
        mask = groups == name
        colour = "grey" if name == "normal test" else f"C{index % 10}"
        axes.scatter(*points[mask].T, s=6, color=colour, alpha=0.7, label=name)
    for index, name in enumerate(ood_sets):
        mask = groups == name
        colour = OOD_COLOURS[index % len(OOD_COLOURS)]
        axes.scatter(*points[mask].T, s=12, marker="x", color=colour, linewidths=0.8, label=name)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title("t-SNE of the scored model's features", fontsize=10)
    axes.legend(fontsize=7, markerscale=1.5, loc="best")
    return figure


def confusion_figure(pred: np.ndarray, target: np.ndarray) -> Figure:
    """Clusters (rows, matched to classes by the Hungarian matching) x true classes."""
    counts, clusters, classes = contingency(pred, target)
    rows, cols = hungarian_matching(counts)
    matched = [r for _, r in sorted(zip(cols, rows, strict=True))]
    order = matched + [r for r in range(len(clusters)) if r not in matched]
    counts = counts[order]
    figure = Figure(
        figsize=(1 + 0.5 * len(classes), 1 + 0.45 * len(clusters)), layout="constrained"
    )
    axes = figure.add_subplot()
    axes.imshow(counts, cmap="Blues")
    for (i, j), count in np.ndenumerate(counts):
        colour = "white" if count > counts.max() / 2 else "black"
        axes.text(j, i, str(count), ha="center", va="center", fontsize=7, color=colour)
    axes.set_xticks(range(len(classes)), [str(c) for c in classes])
    axes.set_yticks(range(len(order)), [str(clusters[r]) for r in order])
    axes.set(xlabel="true class (evaluation only)", ylabel="pseudo-class")
    return figure


def k_curve_figure(k_values: Sequence[int], gaps: Sequence[float], chosen: int) -> Figure:
    """``K=auto``: the eigengap of the mined kNN graph by K, the chosen K marked."""
    figure = Figure(figsize=(5, 3.2), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(k_values, gaps, marker="o")
    axes.axvline(chosen, color="tab:red", linestyle="--", label=f"chosen K={chosen}")
    axes.set(xlabel="K", ylabel="eigengap  λ(K+1) - λ(K)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title("K=auto: eigengap of the mined kNN graph", fontsize=10)
    axes.legend(fontsize=8)
    return figure
