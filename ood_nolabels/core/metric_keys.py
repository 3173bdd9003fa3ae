"""Metric names: the one type that builds and parses every OOD metric name.

``ood/<ood_set>/<scorer>/<metric>`` is the weight-averaged (or only) model,
``ood_epoch<e>/...`` the model at the end of epoch ``e`` (logged as the series ``ood_epoch/...``
against ``epoch``), ``ood_epoch_mean/...`` the mean over the epochs' models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

# The OOD metrics of every scorer and OOD set (core.ood_metrics computes them).
METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out")
FINAL = "ood"
EPOCH = "ood_epoch"
EPOCH_MEAN = "ood_epoch_mean"
# Feature drift from the pretrained backbone: ``drift/<signal>``, ``drift_epoch<e>/<signal>``.
DRIFT = "drift"
_SCOPE = re.compile(r"^(ood|ood_epoch_mean|ood_epoch(\d+))$")


@dataclass(frozen=True, order=True)
class MetricKey:
    """One OOD metric of one scorer on one OOD set; ``epoch`` only for per-epoch models."""

    ood_set: str
    scorer: str
    metric: str
    scope: str = FINAL
    epoch: int | None = None

    def __post_init__(self) -> None:
        if (self.scope == EPOCH) != (self.epoch is not None):
            raise ValueError(f"scope {self.scope!r} with epoch {self.epoch}")
        for part in (self.ood_set, self.scorer, self.metric):
            if "/" in part or not part:
                raise ValueError(f"metric name parts must be non-empty without '/': {part!r}")

    @property
    def series(self) -> str:
        """The name logged to W&B / CSV: per-epoch values share one series."""
        return f"{self.scope}/{self.ood_set}/{self.scorer}/{self.metric}"

    def __str__(self) -> str:
        """The name in ``metrics.json`` (one entry per epoch for per-epoch values)."""
        scope = f"{EPOCH}{self.epoch}" if self.epoch is not None else self.scope
        return f"{scope}/{self.ood_set}/{self.scorer}/{self.metric}"

    def at(self, scope: str, epoch: int | None = None) -> MetricKey:
        return replace(self, scope=scope, epoch=epoch)

    @classmethod
    def parse(cls, name: str) -> MetricKey | None:
        """The key behind a ``metrics.json`` name, or None for other metrics (``cluster/...``)."""
        parts = name.split("/")
        match = _SCOPE.match(parts[0]) if len(parts) == 4 else None
        if match is None:
            return None
        epoch = None if match.group(2) is None else int(match.group(2))
        scope = EPOCH if epoch is not None else parts[0]
        return cls(parts[1], parts[2], parts[3], scope, epoch)


def ood_metrics_of(metrics: dict[str, float]) -> dict[MetricKey, float]:
    """The OOD metrics among a run's metrics, by key."""
    parsed = {name: MetricKey.parse(name) for name in metrics}
    return {key: metrics[name] for name, key in parsed.items() if key is not None}
