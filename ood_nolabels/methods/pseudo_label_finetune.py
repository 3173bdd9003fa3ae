"""The paper's method: pseudo-labels -> finetune with weight averaging -> kNN / Mahalanobis."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from ood_nolabels.detector import Detector
from ood_nolabels.methods import RunResult
from ood_nolabels.methods.evaluate import build_evaluation, evaluate_model
from ood_nolabels.runtime import Runtime
from ood_nolabels.scoring.evaluation import epoch_mean
from ood_nolabels.stages.base import check_num_clusters
from ood_nolabels.stages.cache import load_artifact
from ood_nolabels.stages.finetune import finetune as finetune_stage


def pseudo_label_finetune(
    runtime: Runtime,
    backbone: DictConfig,
    pseudo_labels: DictConfig,
    finetune: DictConfig,
    scorers: DictConfig,
    num_clusters: int,
    evaluate_every_n_epochs: int | None = 1,
    keep_pretrained_features: bool = False,
) -> RunResult:
    """Finetune the pretrained ``backbone`` on the ``pseudo_labels`` source's labels.

    Mahalanobis uses the pseudo-classes. The evaluation callback scores the weight-averaged model
    (``ood/...``) and, every ``evaluate_every_n_epochs`` epochs, the epoch's model
    (``ood_epoch<e>/...``, with their mean ``ood_epoch_mean/...``). When the finetune stage is
    reused from the cache, or resumed, the epochs not seen live are scored from their saved
    weights through the same callback. ``keep_pretrained_features`` extracts the pretrained
    backbone's features first, for the retrieval figure (pretrained vs finetuned neighbours).
    """
    check_num_clusters(num_clusters)
    model = instantiate(backbone)  # before stage 1: missing weights fail before any training
    labels, metrics = instantiate(pseudo_labels)(runtime)
    evaluation = build_evaluation(runtime, model, scorers, labels, evaluate_every_n_epochs)
    pretrained = None
    if keep_pretrained_features:
        with runtime.timings.measure("pretrained features (retrieval figure)", "extracted"):
            pretrained = runtime.extract(model, evaluation.loaders)
    epoch_weights, stage = finetune_stage(
        runtime, model, backbone, labels, finetune, num_clusters, callbacks=[evaluation]
    )
    final = evaluation.final or evaluate_model(runtime, evaluation, model)
    # Now, before replayed epochs refit the scorers: the averaged model and its fitted scorers.
    detector = Detector.from_evaluation(
        model, backbone, evaluation, scorers, labels, num_clusters, [stage.name]
    )
    if evaluate_every_n_epochs:
        averaged = {name: value.clone() for name, value in model.state_dict().items()}
        for epoch, path in enumerate(epoch_weights):
            if (epoch + 1) % evaluate_every_n_epochs == 0 and epoch not in evaluation.epochs:
                model.load_state_dict(load_artifact(path))
                evaluate_model(runtime, evaluation, model, epoch=epoch)
        model.load_state_dict(averaged)
        for result in evaluation.epochs.values():
            metrics |= result.named()
        mean = epoch_mean(evaluation.epochs)
        metrics |= mean
        runtime.log_metrics(mean)
    return RunResult(metrics | final.named(), final, detector, labels, pretrained)
