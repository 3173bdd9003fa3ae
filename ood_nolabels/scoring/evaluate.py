"""Score every OOD set with every scorer and name the metrics consistently."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ood_nolabels.data.datamodule import NORMAL_TEST, NORMAL_TRAIN
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.scoring.base import Scorer
from ood_nolabels.scoring.features import FeatureExtractor
from ood_nolabels.scoring.metrics import ood_metrics


def metric_name(prefix: str, ood_set: str, scorer: str, metric: str) -> str:
    """``ood/<ood_set>/<scorer>/<metric>``, the name every logger and results file uses."""
    return f"{prefix}/{ood_set}/{scorer}/{metric}"


def score_ood_sets(
    features: Mapping[str, torch.Tensor],
    ood_names: list[str],
    scorers: Mapping[str, Scorer],
    train_labels: torch.Tensor | None = None,
    prefix: str = "ood",
) -> dict[str, float]:
    """Fit each scorer on the normal training features, then compare normal test vs each OOD set."""
    results = {}
    for scorer_name, scorer in scorers.items():
        scorer.fit(features[NORMAL_TRAIN], train_labels)
        normal_scores = scorer.score(features[NORMAL_TEST])
        for ood_set in ood_names:
            metrics = ood_metrics(normal_scores, scorer.score(features[ood_set]))
            for metric, value in metrics.items():
                results[metric_name(prefix, ood_set, scorer_name, metric)] = value
    return results


class OODScoringModule(FeatureExtractor):
    """Extract features of every split, score the OOD sets and log the metrics.

    Run with ``trainer.test(module, dataloaders=list(datamodule.eval_loaders(...).values()))``.
    ``train_labels`` (pseudo- or ground-truth labels of the normal training set, in dataset
    order) are given to the scorers that use them, e.g. class-conditional Mahalanobis.
    """

    def __init__(
        self,
        backbone: Backbone,
        split_names: list[str],
        ood_names: list[str],
        scorers: Mapping[str, Scorer],
        train_labels: torch.Tensor | None = None,
        prefix: str = "ood",
        channels_last: bool = True,
    ) -> None:
        super().__init__(backbone, split_names, channels_last)
        self.ood_names = ood_names
        self.scorers = dict(scorers)
        self.train_labels = train_labels
        self.prefix = prefix
        self.results: dict[str, float] = {}

    def on_features(self, features: dict[str, torch.Tensor]) -> None:
        self.results = score_ood_sets(
            features, self.ood_names, self.scorers, self.train_labels, self.prefix
        )
        self.log_dict(self.results, add_dataloader_idx=False)
