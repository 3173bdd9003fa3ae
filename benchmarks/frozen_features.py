"""Cost of ``stage1=frozen_features`` at a given scale: extraction, mining, head epochs.

Random images (N x 3 x size x size) go through a ``backbone`` group config once (the cached
``features`` stage), neighbours are mined in that space, and the recipe's heads-only SCAN and
self-label modules (``conf/stage1/frozen_features.yaml``) train for ``--epochs`` epochs each
on the features, through Lightning as in a run. Prints each time and the projection to the full
recipe (extraction + mining + every SCAN and self-label epoch). Random pixels say nothing about
accuracy, only about cost.

Usage (CIFAR-10 scale on a GPU, as scripts/gpu_check.sh):
  python benchmarks/frozen_features.py --backbone clip_vit_b16 --images 50000 --image-size 224 \
      --device cuda [--random-weights: no download, same cost]
Smoke test on CPU:
  python benchmarks/frozen_features.py --backbone efficientnet_lite0 --images 64 --image-size 32
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from ood_nolabels.config import compose
from ood_nolabels.core.neighbors import mine_neighbors
from ood_nolabels.data.augment import PairedViews
from ood_nolabels.data.images import IndexedDataset, NeighborsDataset
from ood_nolabels.methods.pipelines.features_stage import FEATURE_BATCH_SIZE, FeatureVectors
from ood_nolabels.models.precomputed import PrecomputedFeatures, identity
from ood_nolabels.modules.scan import SCANModule
from ood_nolabels.modules.selflabel import SelfLabelModule


def extract(backbone, images: int, image_size: int, batch_size: int, device: str) -> torch.Tensor:
    """Features of ``images`` random normalised images, made batch by batch on ``device``."""
    backbone = backbone.to(device).eval()
    generator = torch.Generator(device).manual_seed(0)
    chunks = []
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    with torch.inference_mode(), autocast:
        for start in range(0, images, batch_size):
            n = min(batch_size, images - start)
            batch = torch.randn(n, 3, image_size, image_size, device=device, generator=generator)
            chunks.append(backbone(batch).float().cpu())
    if device == "cuda":
        torch.cuda.synchronize()
    return torch.cat(chunks)


def fit_seconds(module: L.LightningModule, loader: DataLoader, epochs: int, device: str) -> float:
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0", help="conf/backbone/<name>")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=256, help="extraction batch")
    parser.add_argument("--num-clusters", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1, help="SCAN / self-label epochs timed")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="skip the pretrained weights (same cost; for machines without the hub or its cache)",
    )
    args = parser.parse_args()

    cfg = compose("method=stage1_only", "stage1=frozen_features", f"backbone={args.backbone}")
    recipe, backbone_cfg = cfg.stage1, cfg.backbone
    if "image_size" in backbone_cfg:
        backbone_cfg.image_size = args.image_size
    if args.random_weights and "pretrained" in backbone_cfg:  # open_clip: a tag; timm: a flag
        backbone_cfg.pretrained = None if isinstance(backbone_cfg.pretrained, str) else False
    L.seed_everything(0, verbose=False)
    backbone = instantiate(backbone_cfg)

    start = time.perf_counter()
    features = extract(backbone, args.images, args.image_size, args.batch_size, args.device)
    extraction = time.perf_counter() - start
    start = time.perf_counter()
    num_neighbors = min(recipe.mining.num_neighbors, args.images - 1)
    neighbors = mine_neighbors(features, num_neighbors, include_self=True)
    mining = time.perf_counter() - start

    vectors = FeatureVectors(features)
    scan = SCANModule(
        backbone=PrecomputedFeatures(features.shape[1]),
        num_clusters=args.num_clusters,
        optimizer=instantiate(recipe.scan.optimizer),
        neighbors=neighbors,
        **recipe.scan.module,
    )
    scan.validation_loader = DataLoader(
        IndexedDataset(vectors, identity), batch_size=FEATURE_BATCH_SIZE
    )
    pairs = DataLoader(
        NeighborsDataset(vectors, neighbors, identity),
        batch_size=min(recipe.scan.batch_size, args.images),
        shuffle=True,
    )
    scan_epoch = fit_seconds(scan, pairs, args.epochs, args.device) / args.epochs
    selflabel = SelfLabelModule(
        scan.cluster_model(),
        optimizer=instantiate(recipe.selflabel.optimizer),
        **{**recipe.selflabel.module, "threshold": 0.0},  # random features: keep every sample
    )
    views = DataLoader(
        IndexedDataset(vectors, PairedViews(identity, identity)),
        batch_size=min(recipe.selflabel.batch_size, args.images),
        shuffle=True,
    )
    selflabel_epoch = fit_seconds(selflabel, views, args.epochs, args.device) / args.epochs

    total = (
        extraction
        + mining
        + scan_epoch * recipe.scan.epochs
        + selflabel_epoch * recipe.selflabel.epochs
    )
    print(
        f"frozen_features, backbone={args.backbone}, {args.images} random images at "
        f"{args.image_size} px, device={args.device}, features {tuple(features.shape)}"
    )
    print(f"  feature extraction (once, cached): {extraction:.2f} s")
    print(f"  mining {num_neighbors} neighbours: {mining:.2f} s")
    print(f"  heads-only SCAN epoch: {scan_epoch:.2f} s (recipe: {recipe.scan.epochs} epochs)")
    print(f"  self-label epoch: {selflabel_epoch:.2f} s (recipe: {recipe.selflabel.epochs} epochs)")
    print(f"  projected stage 1 (full recipe): {total:.1f} s")


if __name__ == "__main__":
    main()
