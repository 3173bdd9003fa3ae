"""DN2 (Bergman et al.): kNN or one-Gaussian Mahalanobis on raw pretrained features."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from ood_nolabels.detector import Detector
from ood_nolabels.methods import RunResult
from ood_nolabels.methods.evaluate import build_evaluation, evaluate_model
from ood_nolabels.runtime import Runtime


def dn2(runtime: Runtime, backbone: DictConfig, scorers: DictConfig) -> RunResult:
    """Score every OOD set with the pretrained ``backbone`` (a config), nothing trained."""
    model = instantiate(backbone)
    evaluation = build_evaluation(runtime, model, scorers)
    result = evaluate_model(runtime, evaluation, model)
    detector = Detector.from_evaluation(model, backbone, evaluation, scorers)
    return RunResult(result.named(), result, detector)
