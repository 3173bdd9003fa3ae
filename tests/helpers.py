"""Small helpers shared by test modules: a quiet trainer, tiny backbones, a frozen optimizer,
random images, small data sets written in their real formats, a fake finished run.

Importable as ``helpers`` from every test directory: pytest puts tests/ (the first folder
upwards without an ``__init__.py``) on ``sys.path``.
"""

import hashlib
import pickle
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision.datasets import CIFAR10

from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.data.folders import FolderSource
from ood_nolabels.engine.evaluation import EvaluationResult
from ood_nolabels.inference.detector import Detector
from ood_nolabels.methods.base import RunResult
from ood_nolabels.models.backbones import Backbone

# -- training ------------------------------------------------------------------------------------


def quiet_trainer(**kwargs) -> L.Trainer:
    """A CPU trainer without logger, checkpoints, progress bar or summary."""
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**(defaults | kwargs))


def fit(module: L.LightningModule, loader: DataLoader, epochs: int = 1) -> None:
    quiet_trainer(max_epochs=epochs).fit(module, loader)


def frozen_sgd(params) -> torch.optim.Optimizer:
    """An optimizer that never moves the weights (lr 0): losses can be recomputed afterwards."""
    return torch.optim.SGD(params, lr=0.0)


# -- backbones -----------------------------------------------------------------------------------


def conv_backbone(
    image_size: int = 16, channels: int = 6, pool: int = 2, batchnorm: bool = False
) -> Backbone:
    """conv 3x3 -> [BatchNorm] -> ReLU -> adaptive pool -> flatten: ``channels * pool**2`` dims.

    Seeded, so two calls build the same weights.
    """
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, channels, 3), *([nn.BatchNorm2d(channels)] if batchnorm else [])]
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(pool), nn.Flatten()]
    return Backbone(
        nn.Sequential(*layers), channels * pool**2, image_size, mean=(0.5,) * 3, std=(0.5,) * 3
    )


def linear_backbone(image_size: int = 4, dim: int = 8) -> Backbone:
    """flatten -> linear: the smallest backbone with parameters."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, dim))
    return Backbone(model, dim, image_size, mean=(0.5,) * 3, std=(0.5,) * 3)


def tiny_backbone(dim: int = 8, batch_norm: bool = False) -> Backbone:
    layers = [nn.Flatten(), *([nn.BatchNorm1d(3 * 4 * 4)] if batch_norm else [])]
    model = nn.Sequential(*layers, nn.Linear(3 * 4 * 4, dim))
    return Backbone(model, feature_dim=dim, image_size=4, mean=(0.5,) * 3, std=(0.5,) * 3)


# -- images --------------------------------------------------------------------------------------


def image(size: int = 32, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


def noise_image(size: int = 32, seed: int = 0, width: int | None = None) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, width or size, 3), dtype=np.uint8))


# -- data sets on disk ---------------------------------------------------------------------------

HW = 32


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def random_images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, HW, HW, 3), dtype=np.uint8)


def write_cifar(root: Path, reader: type[CIFAR10], monkeypatch: pytest.MonkeyPatch, seed: int = 0):
    """Write every file of ``reader``'s release; returns {split: (images, labels)}.

    Batches hold rows of 3072 bytes (the R, G, B planes) as in the official pickles; keys are
    ``str``, which is what the Python 2 originals load as under torchvision's latin1 decoding.
    """
    rng = np.random.default_rng(seed)
    folder = root / reader.base_folder
    folder.mkdir(parents=True)
    label_key = "labels" if reader is CIFAR10 else "fine_labels"
    expected = {}
    for split, listed in (("train", reader.train_list), ("test", reader.test_list)):
        images, labels, table = [], [], []
        for name, _md5 in listed:
            batch = random_images(rng, 3)
            batch_labels = rng.integers(0, 10, len(batch)).tolist()
            rows = batch.transpose(0, 3, 1, 2).reshape(len(batch), 3 * HW * HW)
            with open(folder / name, "wb") as file:
                pickle.dump({"data": rows, label_key: batch_labels}, file, protocol=2)
            images.append(batch)
            labels += batch_labels
            table.append([name, md5(folder / name)])
        monkeypatch.setattr(reader, f"{split}_list", table)
        expected[split] = (np.concatenate(images), np.array(labels))
    meta = folder / reader.meta["filename"]
    with open(meta, "wb") as file:
        pickle.dump({reader.meta["key"]: [f"class{i}" for i in range(10)]}, file, protocol=2)
    monkeypatch.setattr(reader, "meta", {**reader.meta, "md5": md5(meta)})
    return expected


def write_image(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 0, 0)).save(path)


def folder(root: Path, name: str = "imagefolder_ood") -> FolderSource:
    return FolderSource(str(root), train_dir=None, test_dir=".", name=name)


# -- runs ----------------------------------------------------------------------------------------


def trained_nothing(tmp_path: Path) -> bool:
    artifacts = tmp_path / "artifacts"
    return not artifacts.exists() or not any(artifacts.glob("*-*[0-9a-f]"))


def fake_result(datamodule, with_labels: bool = True) -> RunResult:
    """A finished run on the synthetic data: random features, their kNN-like scores."""
    generator = torch.Generator().manual_seed(0)
    features = {
        split: torch.randn(len(images), 8, generator=generator)
        for split, images in datamodule.images.items()
    }
    scores = {"knn": {s: f.norm(dim=1) for s, f in features.items() if s != NORMAL_TRAIN}}
    evaluation = EvaluationResult(scores=scores, features=features)
    metrics = {"ood/synthetic_4_5/knn/auroc": 0.9, "ood_epoch0/synthetic_4_5/knn/auroc": 0.8}
    metrics["ood_epoch1/synthetic_4_5/knn/auroc"] = 0.85
    labels = torch.arange(len(features[NORMAL_TRAIN])) % 4 if with_labels else None
    reference = features if with_labels else None
    return RunResult(metrics, evaluation, train_labels=labels, reference_features=reference)


def auroc_from_scores(run_dir: Path, ood_set: str, scorer: str) -> float:
    """The AUROC of a run recomputed by scikit-learn from its ``scores.csv`` (OOD positive)."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    scores = pd.read_csv(run_dir / "scores.csv")
    scores = scores[(scores.scorer == scorer) & scores.split.isin(["normal_test", ood_set])]
    return float(roc_auc_score(scores.split == ood_set, scores.score))


def hungarian_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Clustering accuracy under the best one-to-one matching of clusters to classes."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((pred.max() + 1, target.max() + 1))
    np.add.at(counts, (pred, target), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(pred))


def small_detector() -> tuple[Detector, list[Image.Image]]:
    """A SmallCNN detector with random weights, unusual preprocessing, both scorers fitted."""
    config = {"_target_": "ood_nolabels.models.small_cnn.SmallCNNBackbone", "width": 4}
    torch.manual_seed(0)
    backbone = instantiate(config).eval()
    backbone.mean, backbone.image_size = (0.2, 0.4, 0.6), 12  # must survive the round trip
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)) for _ in range(40)]
    with torch.no_grad():
        features = backbone(torch.stack([backbone.transform()(i) for i in images]))
    scorer_configs = {
        "knn": {"_target_": "ood_nolabels.scorers.knn.KNNScorer", "k": 2},
        "mahalanobis": {"_target_": "ood_nolabels.scorers.mahalanobis.MahalanobisScorer"},
    }
    labels = torch.arange(30) % 3
    scorers = {n: instantiate(c).fit(features[:30], labels) for n, c in scorer_configs.items()}
    normal = {n: s.score(features[30:]) for n, s in scorers.items()}
    detector = Detector(backbone, config, scorers, scorer_configs, normal, labels, 3)
    return detector, images
