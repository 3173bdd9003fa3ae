"""DN2 (Bergman et al.): kNN or one-Gaussian Mahalanobis on raw pretrained features."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from ood_nolabels.engine.evaluation import build_evaluation, evaluate_model
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.base import Method, RunResult, build_detector


class DN2(Method):
    """Score every OOD set with the pretrained ``backbone`` (a config); nothing is trained."""

    def __init__(self, backbone: DictConfig, scorers: DictConfig) -> None:
        self.backbone = backbone
        self.scorers = scorers

    def run(self, runtime: Runtime) -> RunResult:
        model = instantiate(self.backbone)
        evaluation = build_evaluation(runtime, model, self.scorers)
        result = evaluate_model(runtime, evaluation, model)
        detector = build_detector(model, self.backbone, result, self.scorers)
        return RunResult(result.named(), result, detector)
