"""Markdown tables for the console, the README and ``results.md``: OOD metrics in percent."""

from __future__ import annotations

from ood_nolabels.core.metric_keys import (
    DRIFT,
    EPOCH,
    EPOCH_MEAN,
    FINAL,
    METRICS,
    ood_metrics_of,
)

HEADERS = {"auroc": "AUROC", "fpr95": "FPR@95TPR", "aupr_in": "AUPR-In", "aupr_out": "AUPR-Out"}


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


def results_table(metrics: dict[str, float], scope: str = FINAL) -> str:
    """One row per (OOD set, scorer), metrics in percent; OOD is the positive class."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in ood_metrics_of(metrics).items():
        if key.scope == scope and key.metric in METRICS:
            rows.setdefault((key.ood_set, key.scorer), {})[key.metric] = value
    if not rows:
        return f"(no {scope}/ metrics)"
    header = ["OOD set", "scorer", *(HEADERS[m] for m in METRICS)]
    lines = [
        [ood_set, scorer, *(percent(values.get(m)) for m in METRICS)]
        for (ood_set, scorer), values in sorted(rows.items())
    ]
    return markdown_table(header, lines)


def epoch_auroc_table(metrics: dict[str, float]) -> str:
    """AUROC (%) of each epoch's model, their mean, and the weight-averaged model; then the
    feature-drift signals of the same models against the pretrained features (``drift/...``)."""
    keys = ood_metrics_of(metrics)
    aurocs = {key: value for key, value in keys.items() if key.metric == "auroc"}
    epochs = sorted({key.epoch for key in aurocs if key.scope == EPOCH})
    rows = sorted(key for key in aurocs if key.scope == FINAL)
    if not epochs or not rows:
        return ""
    header = ["OOD set / scorer", *(f"epoch {e}" for e in epochs), "epoch mean", "averaged"]
    lines = []
    for key in rows:
        cells = [aurocs.get(key.at(EPOCH, e)) for e in epochs]
        cells += [aurocs.get(key.at(EPOCH_MEAN)), aurocs[key]]
        lines.append([f"{key.ood_set} / {key.scorer}", *(percent(c) for c in cells)])
    signals = sorted(name.split("/", 1)[1] for name in metrics if name.startswith(f"{DRIFT}/"))
    for signal in signals:
        cells = [metrics.get(f"{DRIFT}_epoch{e}/{signal}") for e in epochs]
        cells += [None, metrics[f"{DRIFT}/{signal}"]]
        lines.append([f"drift: {signal}", *("-" if c is None else f"{c:.3f}" for c in cells)])
    return markdown_table(header, lines)
