"""The one OOD evaluation path: :class:`OODEvaluation`, a Lightning callback.

During a finetune it scores the model at every ``every_n_epochs``-th epoch end (``ood_epoch/...``,
logged against ``epoch``) and the final, weight-averaged model at fit end (``ood/...``). Methods
that train nothing (DN2, the SCAN-features baseline) score a model outside a fit through
:func:`evaluate_model`, the same code that scores, names and logs the metrics.

Every scoring fits new scorers and returns an :class:`EvaluationResult` that owns them: results
never change once made, so a detector can be built from any of them at any time.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from ood_nolabels.core.feature_drift import feature_drift
from ood_nolabels.core.metric_keys import DRIFT, EPOCH, EPOCH_MEAN, FINAL, MetricKey
from ood_nolabels.core.ood_metrics import ood_metrics
from ood_nolabels.core.timings import Timings
from ood_nolabels.data.splits import NORMAL_TEST, NORMAL_TRAIN
from ood_nolabels.engine.extraction import extract_during_fit
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.scorers.base import Scorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one model, the per-image anomaly scores behind them and the fitted scorers.

    ``scores[scorer][split]`` holds one score per image of the normal test split and of each OOD
    set, in dataset order; ``scorers`` the scorers fitted on this model's normal training
    features (those that did not fail). The final model's result also keeps the ``features`` of
    every split (for the diagnostic figures and the saved detector). ``drift`` holds the
    label-free signals of :func:`~ood_nolabels.core.feature_drift.feature_drift` against the
    pretrained features of the normal test images, when the evaluation was given those.
    """

    metrics: dict[MetricKey, float] = field(default_factory=dict)
    scores: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # scorer -> what went wrong
    scorers: dict[str, Scorer] = field(default_factory=dict)
    features: dict[str, torch.Tensor] | None = None
    drift: dict[str, float] = field(default_factory=dict)
    epoch: int | None = None

    def named(self) -> dict[str, float]:
        """The metrics under their ``metrics.json`` names (drift as ``drift[_epoch<e>]/...``)."""
        scope = DRIFT if self.epoch is None else f"{DRIFT}_epoch{self.epoch}"
        drift = {f"{scope}/{signal}": value for signal, value in self.drift.items()}
        return {str(key): value for key, value in self.metrics.items()} | drift


def epoch_mean(epochs: Mapping[int, EvaluationResult]) -> dict[str, float]:
    """``ood_epoch_mean/...``: the mean over the per-epoch models, to compare with averaging."""
    values: dict[MetricKey, list[float]] = {}
    for result in epochs.values():
        for key, value in result.metrics.items():
            values.setdefault(key.at(EPOCH_MEAN), []).append(value)
    return {str(key): sum(v) / len(v) for key, v in values.items()}


def check_not_constant(scores: Mapping[str, torch.Tensor], scorer: str) -> None:
    """Every image scored alike means AUROC 50 from garbage, not a result: stop instead."""
    values = torch.cat([s.flatten() for s in scores.values()])
    if len(values) > 1 and bool((values == values[0]).all()):
        raise ValueError(
            f"scorer {scorer!r} gave every image the same score ({float(values[0]):.4g}): the "
            "features are constant, so the backbone collapsed or diverged. Lower the learning "
            "rate of the stage that trained it, or check that the images are not blank."
        )


class OODEvaluation(L.Callback):
    """Extract features, fit new scorers on the normal training features, score every OOD set.

    ``scorers`` map names to unfitted scorers, prototypes that every scoring copies before it
    fits the copy; ``loaders`` map split names
    (``normal_train``, ``normal_test`` and one per OOD set) to ordered loaders with the scored
    model's preprocessing; ``train_labels`` (pseudo- or ground-truth classes of the normal
    training set) go to scorers that use them. Every result is kept: ``epochs[e]`` per epoch,
    ``final`` for the model at fit end (or the one evaluated last without an epoch).
    ``reference``: the pretrained backbone's features of the normal test split, against which
    every scored model's :func:`~ood_nolabels.core.feature_drift.feature_drift` is measured.
    """

    def __init__(
        self,
        scorers: Mapping[str, Scorer],
        loaders: Mapping[str, DataLoader],
        train_labels: torch.Tensor | None = None,
        every_n_epochs: int | None = 1,
        loggers: Sequence[Logger] = (),
        timings: Timings | None = None,
    ) -> None:
        missing = {NORMAL_TRAIN, NORMAL_TEST} - set(loaders)
        if missing:
            raise ValueError(f"OODEvaluation needs loaders for {sorted(missing)}")
        if not scorers:
            raise ValueError("no scorer configured: choose a `scorer=` config")
        if every_n_epochs is not None and every_n_epochs < 0:
            raise ValueError(
                f"evaluation.every_n_epochs={every_n_epochs}; use a positive number, or null / 0 "
                "to score only the final model"
            )
        self.scorers = dict(scorers)
        self.loaders = dict(loaders)
        self.ood_names = [name for name in loaders if name not in (NORMAL_TRAIN, NORMAL_TEST)]
        self.train_labels = train_labels
        self.every_n_epochs = every_n_epochs
        self.loggers = list(loggers)
        self.timings = timings
        self.reference: torch.Tensor | None = None  # set by a method that finetunes
        self.epochs: dict[int, EvaluationResult] = {}
        self.final: EvaluationResult | None = None

    def scores_epoch(self, epoch: int) -> bool:
        """Whether the model at the end of ``epoch`` (0-based) is scored."""
        return bool(self.every_n_epochs) and (epoch + 1) % self.every_n_epochs == 0

    # -- inside trainer.fit -------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.scores_epoch(epoch):
            extract = partial(extract_during_fit, trainer, pl_module.backbone, self.loaders)
            self.score_model(extract, epoch=epoch, step=trainer.global_step)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After ``on_train_end``, so a weight-averaging callback has swapped its average in."""
        extract = partial(extract_during_fit, trainer, pl_module.backbone, self.loaders)
        self.score_model(extract, step=trainer.global_step)

    # -- the scoring path every method shares ---------------------------------------------------
    def evaluate(
        self,
        features: Mapping[str, torch.Tensor],
        epoch: int | None = None,
        step: int | None = None,
    ) -> EvaluationResult:
        """Score ``features`` (of every split), log the metrics and keep the result."""
        metrics: dict[MetricKey, float] = {}
        scores: dict[str, dict[str, torch.Tensor]] = {}
        failures: dict[str, str] = {}
        fitted: dict[str, Scorer] = {}
        scope = FINAL if epoch is None else EPOCH
        for scorer_name, prototype in self.scorers.items():
            try:  # one scorer's failure must not lose the others' results
                scorer = copy.deepcopy(prototype)
                scores[scorer_name] = self._score(scorer, scorer_name, features)
            except Exception as error:
                failures[scorer_name] = f"{type(error).__name__}: {error}"
                log.error("scorer %s failed: %s", scorer_name, failures[scorer_name])
                continue
            fitted[scorer_name] = scorer
            for ood_set in self.ood_names:
                values = ood_metrics(scores[scorer_name][NORMAL_TEST], scores[scorer_name][ood_set])
                for metric, value in values.items():
                    metrics[MetricKey(ood_set, scorer_name, metric, scope, epoch)] = value
        kept = (
            {split: values.cpu() for split, values in features.items()} if epoch is None else None
        )
        drift = (
            feature_drift(self.reference, features[NORMAL_TEST].cpu())
            if self.reference is not None
            else {}
        )
        result = EvaluationResult(metrics, scores, failures, fitted, kept, drift, epoch)
        if epoch is None:
            self.final = result
        else:
            self.epochs[epoch] = result
        self._log(result, epoch, step)
        return result

    def score_model(
        self,
        extract: Callable[[], Mapping[str, torch.Tensor]],
        epoch: int | None = None,
        step: int | None = None,
    ) -> EvaluationResult:
        """Features from ``extract()``, then :meth:`evaluate`; the time of both is reported."""
        start = time.perf_counter()
        result = self.evaluate(extract(), epoch=epoch, step=step)
        seconds = time.perf_counter() - start
        model = "final model" if epoch is None else f"epoch {epoch} model"
        log.info(
            "scored the %s (extraction + %d scorer(s)) in %.1f s", model, len(self.scorers), seconds
        )
        if self.timings is not None:
            self.timings.add(f"scoring: {model}", "scored", seconds)
        return result

    def _score(
        self, scorer: Scorer, name: str, features: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        scorer.fit(features[NORMAL_TRAIN], self.train_labels)
        scores = {split: scorer.score(features[split]) for split in (NORMAL_TEST, *self.ood_names)}
        check_not_constant(scores, name)
        return scores

    @rank_zero_only
    def _log(self, result: EvaluationResult, epoch: int | None, step: int | None) -> None:
        values = {key.series: value for key, value in result.metrics.items()}
        values |= {f"{DRIFT}/{signal}": value for signal, value in result.drift.items()}
        if epoch is not None:
            values["epoch"] = epoch
            aurocs = [v for k, v in result.metrics.items() if k.metric == "auroc"]
            if aurocs:
                log.info("epoch %d: mean AUROC %.4f", epoch, sum(aurocs) / len(aurocs))
        for logger in self.loggers:
            logger.log_metrics(values, step=step)


def build_evaluation(
    runtime: Runtime,
    backbone: Backbone,
    scorers: DictConfig,
    train_labels: torch.Tensor | None = None,
    every_n_epochs: int | None = None,
) -> OODEvaluation:
    """The evaluation callback for ``backbone``: every split through its preprocessing and the
    configured ``scorers`` (the ``scorer`` group), fitted anew for every scored model."""
    loaders = runtime.datamodule.eval_loaders(backbone.transform())
    return OODEvaluation(
        {name: instantiate(scorer) for name, scorer in scorers.items()},
        loaders,
        train_labels,
        every_n_epochs,
        runtime.loggers,
        runtime.timings,
    )


def evaluate_model(
    runtime: Runtime, evaluation: OODEvaluation, model: nn.Module, epoch: int | None = None
) -> EvaluationResult:
    """Score ``model`` with ``evaluation`` outside a fit (features from a DDP-safe test loop)."""
    return evaluation.score_model(partial(runtime.extract, model, evaluation.loaders), epoch=epoch)
