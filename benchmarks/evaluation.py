"""Evaluation: the framework's OOD evaluation of one model (features of every split through the
DDP-safe test loop, each scorer fitted once, every split scored, metrics named and kept) vs a bare
loop (``inference_mode`` extraction, the same scorers and metric function called directly).

The demo's setting (``+experiment=digits``: EfficientNet-Lite0 at 64 px, kNN and Mahalanobis with
the K=6 pseudo-classes, here random ones) on its 1,297 images. Both give the same AUROCs (checked).
Also prints the time of one Mahalanobis fit on 5,000 x 2,048 random features.
Usage: python -m benchmarks.evaluation [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra.utils import instantiate

from benchmarks.common import StageTiming, demo_config, fresh_directory, interleaved, runtime_for
from ood_nolabels.core.ood_metrics import ood_metrics
from ood_nolabels.data.datamodule import NORMAL_TEST, NORMAL_TRAIN
from ood_nolabels.engine.evaluation import build_evaluation, evaluate_model
from ood_nolabels.scorers.mahalanobis import MahalanobisScorer


def mahalanobis_fit_seconds(samples: int = 5000, dim: int = 2048, classes: int = 10) -> float:
    features = torch.randn(samples, dim, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(samples) % classes
    start = time.perf_counter()
    MahalanobisScorer().fit(features, labels)
    return time.perf_counter() - start


def measure(repeats: int = 3) -> StageTiming:
    cfg = demo_config()
    runtime = runtime_for(cfg, fresh_directory())
    model = instantiate(cfg.backbone)
    n_train = len(runtime.datamodule.images[NORMAL_TRAIN])
    labels = torch.randint(cfg.K, (n_train,), generator=torch.Generator().manual_seed(0))
    evaluation = build_evaluation(runtime, model, cfg.scorer, labels)
    loaders = evaluation.loaders

    def framework() -> dict[str, float]:
        result = evaluate_model(runtime, evaluation, model)
        return {
            f"{k.ood_set}/{k.scorer}": v for k, v in result.metrics.items() if k.metric == "auroc"
        }

    def bare() -> dict[str, float]:
        model.eval()
        with torch.inference_mode():
            features = {
                name: torch.cat([model(images) for images, _ in loader])
                for name, loader in loaders.items()
            }
        aurocs = {}
        for name, scorer_config in cfg.scorer.items():
            scorer = instantiate(scorer_config).fit(features[NORMAL_TRAIN], labels)
            normal = scorer.score(features[NORMAL_TEST])
            for ood_set in runtime.datamodule.ood_names:
                aurocs[f"{ood_set}/{name}"] = ood_metrics(normal, scorer.score(features[ood_set]))[
                    "auroc"
                ]
        return aurocs

    images = sum(len(loader.dataset) for loader in loaders.values())
    timing = StageTiming(
        "evaluation",
        "evaluation",
        workload=f"{images} digits, EfficientNet-Lite0 at {model.image_size} px, scorers "
        f"{', '.join(cfg.scorer)}",
    )
    ours, reference = interleaved(timing, framework, bare, repeats)
    for key, value in reference.items():
        if abs(ours[key] - value) > 1e-4:
            raise AssertionError(f"{key}: framework AUROC {ours[key]} vs bare {value}")
    return timing


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(measure(args.repeats).line())
    print(f"Mahalanobis fit, 5,000 x 2,048 features, 10 classes: {mahalanobis_fit_seconds():.2f} s")


if __name__ == "__main__":
    main()
