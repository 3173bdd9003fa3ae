"""The paper's method: pseudo-labels -> finetune with weight averaging -> kNN / Mahalanobis."""

from __future__ import annotations

import copy
import logging

from hydra.utils import instantiate
from omegaconf import DictConfig

from ood_nolabels.core.feature_drift import DriftGuard
from ood_nolabels.data.splits import NORMAL_TEST
from ood_nolabels.engine.artifacts import load_artifact
from ood_nolabels.engine.evaluation import build_evaluation, epoch_mean, evaluate_model
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.base import Method, RunResult, build_detector
from ood_nolabels.methods.pipelines.finetune_stage import finetune as finetune_stage
from ood_nolabels.methods.pipelines.recipes import check_stage_recipes
from ood_nolabels.methods.pseudo_labels.base import PseudoLabelSource

log = logging.getLogger(__name__)


class PseudoLabelFinetune(Method):
    """Finetune the pretrained ``backbone`` on the ``pseudo_labels`` source's labels.

    Mahalanobis uses the pseudo-classes. The evaluation callback scores the weight-averaged model
    (``ood/...``) and, every ``evaluate_every_n_epochs`` epochs, the epoch's model
    (``ood_epoch<e>/...``, with their mean ``ood_epoch_mean/...``). When the finetune stage is
    reused from the cache, or resumed, the epochs not seen live are scored from their saved
    weights through the same callback, on a copy of the model. ``keep_pretrained_features``
    extracts the pretrained backbone's features first, for the retrieval figure (pretrained vs
    finetuned neighbours). Every scored model's features are compared with the pretrained
    ones on the normal test images (``drift/...``, no OOD data needed); ``drift_guard`` (a
    :class:`~ood_nolabels.core.feature_drift.DriftGuard` config, null: off) warns when the
    averaged model drifted past its threshold.
    """

    def __init__(
        self,
        backbone: DictConfig,
        pseudo_labels: DictConfig,
        finetune: DictConfig,
        scorers: DictConfig,
        evaluate_every_n_epochs: int | None = 1,
        keep_pretrained_features: bool = False,
        drift_guard: DictConfig | None = None,
    ) -> None:
        self.backbone = backbone
        self.source: PseudoLabelSource = instantiate(pseudo_labels)
        self.finetune = finetune
        self.scorers = scorers
        self.evaluate_every_n_epochs = evaluate_every_n_epochs
        self.keep_pretrained_features = keep_pretrained_features
        self.drift_guard: DriftGuard | None = (
            None if drift_guard is None else DriftGuard(**drift_guard)
        )

    def preflight(self, runtime: Runtime) -> None:
        self.source.preflight(runtime)
        check_stage_recipes({"finetune": self.finetune})

    def run(self, runtime: Runtime) -> RunResult:
        model = instantiate(self.backbone)  # before stage 1: missing weights fail before training
        labels = self.source.labels(runtime)
        evaluation = build_evaluation(
            runtime, model, self.scorers, labels.labels, self.evaluate_every_n_epochs
        )
        pretrained = None
        if self.keep_pretrained_features:
            with runtime.timings.measure("pretrained features (retrieval figure)", "extracted"):
                pretrained = runtime.extract(model, evaluation.loaders)
            evaluation.reference = pretrained[NORMAL_TEST]
        else:
            with runtime.timings.measure("pretrained features (feature drift)", "extracted"):
                loader = {NORMAL_TEST: evaluation.loaders[NORMAL_TEST]}
                evaluation.reference = runtime.extract(model, loader)[NORMAL_TEST]
        epoch_weights, stage = finetune_stage(
            runtime,
            model,
            self.backbone,
            labels.labels,
            self.finetune,
            labels.num_clusters,
            callbacks=[evaluation],
        )
        final = evaluation.final or evaluate_model(runtime, evaluation, model)
        metrics = dict(labels.metrics)
        if self.evaluate_every_n_epochs:
            replica = None  # the epochs not scored live, replayed on a copy of the model
            for epoch, path in enumerate(epoch_weights):
                if evaluation.scores_epoch(epoch) and epoch not in evaluation.epochs:
                    if replica is None:
                        replica = copy.deepcopy(model)
                    replica.load_state_dict(load_artifact(path))
                    evaluate_model(runtime, evaluation, replica, epoch=epoch)
            for result in evaluation.epochs.values():
                metrics |= result.named()
            mean = epoch_mean(evaluation.epochs)
            metrics |= mean
            runtime.log_metrics(mean)
        detector = build_detector(
            model,
            self.backbone,
            final,
            self.scorers,
            labels.labels,
            labels.num_clusters,
            [stage.name],
        )
        warnings = []
        if self.drift_guard is not None:
            warning = self.drift_guard.check(final.drift, "weight-averaged model")
            if warning is not None:
                log.warning(warning)
                warnings.append(warning)
        return RunResult(
            metrics | final.named(),
            final,
            detector,
            labels.labels,
            pretrained,
            labels.num_clusters,
            labels.k_choice,
            warnings,
        )
