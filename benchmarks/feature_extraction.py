"""Feature extraction speed: the framework's Lightning test loop vs a bare PyTorch loop.

Both extract EfficientNet-Lite0 features of every digits split (normal train, normal test, OOD)
with the same loaders; the ratio shows what the Lightning machinery (DDP-safe gathering, hooks,
progress bar off) costs. Prints times and the ratio measured in this one run.
Usage: python benchmarks/feature_extraction.py [--image-size 64 --repeats 3]
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch

from ood_nolabels.data.datamodule import OODDataModule
from ood_nolabels.data.digits import DigitsSource
from ood_nolabels.engine.extraction import FeatureExtractor
from ood_nolabels.models.efficientnet_lite import EfficientNetLiteBackbone


def bare_loop(backbone, loaders) -> dict[str, torch.Tensor]:
    backbone.eval()
    with torch.inference_mode():
        return {
            name: torch.cat([backbone(images) for images, _ in loader])
            for name, loader in loaders.items()
        }


def framework(backbone, loaders) -> dict[str, torch.Tensor]:
    extractor = FeatureExtractor(backbone, list(loaders))
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.test(extractor, list(loaders.values()), verbose=False)
    return extractor.features


def best_of(repeats: int, fn, *args) -> tuple[float, dict]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    backbone = EfficientNetLiteBackbone(image_size=args.image_size)
    datamodule = OODDataModule(
        DigitsSource(classes=range(6)), {"ood": DigitsSource(classes=range(6, 10))}
    )
    loaders = datamodule.eval_loaders(backbone.transform())
    bare_time, bare = best_of(args.repeats, bare_loop, backbone, loaders)
    ours_time, ours = best_of(args.repeats, framework, backbone, loaders)
    for name in bare:
        torch.testing.assert_close(ours[name], bare[name], rtol=1e-4, atol=1e-4)
    images = sum(len(loader.dataset) for loader in loaders.values())
    print(
        f"{images} digits at {args.image_size} px, best of {args.repeats}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"  bare PyTorch loop : {bare_time:6.2f} s")
    print(
        f"  framework (Lightning test loop): {ours_time:6.2f} s "
        f"({ours_time / bare_time:.2f}x the bare loop)"
    )


if __name__ == "__main__":
    main()
