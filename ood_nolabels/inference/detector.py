"""A trained detector saved by a run, loaded to score new images from Python or the shell.

Every run that scores (DN2, SCAN features, the method) writes ``detector.pt`` into its run
directory: exactly what scoring needs and nothing else: the backbone (its config, weights and
preprocessing; the weight-averaged weights for the method), each scorer's config and fitted state
(the kNN bank of normal training features, the Mahalanobis means and precision), the pseudo-labels
and K, the run's config and metrics, the artifacts it came from, and the normal test scores that
set each scorer's threshold. The file holds only tensors and plain containers, so it loads with
``torch.load(weights_only=True)``::

    detector = Detector.load("outputs/digits/<time>/detector.pt")
    scores = detector.score(["a.png", "b.png"])     # {scorer: tensor}, higher = more anomalous
    flags = detector.is_ood(scores)                 # {scorer: bool tensor} at the thresholds
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ood_nolabels.core.atomic import atomic_save
from ood_nolabels.inference.build import build
from ood_nolabels.inference.extract import extract, extract_parallel, process_devices
from ood_nolabels.inference.inputs import ImageInput, ScoredImages, batches_within, image_paths
from ood_nolabels.inference.thresholds import NORMAL_KEEP, threshold_keeping
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.scorers.base import Scorer

DETECTOR_FILE = "detector.pt"
FORMAT = "ood-nolabels-detector"
VERSION = 1
DEFAULT_BATCH_SIZE = 64  # when the detector has no run config
PREPROCESSING = ("image_size", "mean", "std", "interpolation", "crop_pct", "resize_mode")


def without_pretrained_weights(config: Mapping[str, Any]) -> dict[str, Any]:
    """The backbone config with its pretrained-weights loading turned off: the detector's own
    weights replace them, so loading never needs the model hub or a local weights file."""
    config = dict(config)
    if "pretrained" in config:  # timm takes a bool, open_clip a tag (None: no weights)
        config["pretrained"] = False if isinstance(config["pretrained"], bool) else None
    if "checkpoint_path" in config:
        config["checkpoint_path"] = None
    return config


def read_detector_file(path: Path) -> Any:
    """The file's contents, read with ``weights_only=True``: tensors and plain containers only.
    A damaged file, or a pickle holding other objects, is a ``ValueError`` that says which, and
    the pickle is never unpickled (that could run code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} is not a detector written by ood-nolabels: it holds Python objects other "
            "than tensors and plain containers, and will not be unpickled (unpickling can run "
            "code). Score with the detector.pt of a run, or rerun the training to write one"
        ) from error
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{path} cannot be read as a detector file: it is truncated or damaged "
            f"({type(error).__name__}: {error}). Rerun the training that wrote it, or copy it "
            "again"
        ) from error


@dataclass
class Detector:
    """A backbone and its fitted scorers: ``score(images)`` -> anomaly scores (higher = OOD).

    Built by a run from its final evaluation
    (:func:`ood_nolabels.methods.base.build_detector`), written by :meth:`save`, restored by
    :meth:`load` without the training images or features (nor Lightning, nor Hydra).
    """

    backbone: Backbone
    backbone_config: dict[str, Any]
    scorers: dict[str, Scorer]
    scorer_configs: dict[str, dict[str, Any]]
    normal_test_scores: dict[str, torch.Tensor]
    pseudo_labels: torch.Tensor | None = None
    num_clusters: int | None = None
    artifacts: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    normal_keep: float = NORMAL_KEEP

    # -- the file -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """One file, written to a temporary name and renamed into place."""
        path = Path(path)
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "backbone": {
                "config": self.backbone_config,
                "preprocessing": {name: getattr(self.backbone, name) for name in PREPROCESSING},
                "state_dict": {k: v.detach().cpu() for k, v in self.backbone.state_dict().items()},
            },
            "scorers": {
                name: {"config": self.scorer_configs[name], "state": scorer.state_dict()}
                for name, scorer in self.scorers.items()
            },
            "normal_test_scores": self.normal_test_scores,
            "normal_keep": self.normal_keep,
            "thresholds": self.thresholds(),
            "pseudo_labels": self.pseudo_labels,
            "num_clusters": self.num_clusters,
            "artifacts": self.artifacts,
            "metrics": self.metrics,
            "config": self.config,
        }
        return atomic_save(payload, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> Detector:
        """A saved detector, on ``device`` (default: a GPU when there is one, else the CPU)."""
        path = Path(path).expanduser()
        if path.is_dir():
            path = path / DETECTOR_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no detector at {path}: pass a run directory or its {DETECTOR_FILE}"
            )
        payload = read_detector_file(path)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{path} is not an ood-nolabels detector file")
        if payload["version"] != VERSION:
            raise ValueError(
                f"{path} is a version {payload['version']} detector; this code reads version "
                f"{VERSION}: score it with the ood-nolabels release that wrote it"
            )
        saved = payload["backbone"]
        backbone = build(without_pretrained_weights(saved["config"]))
        backbone.load_state_dict(saved["state_dict"])
        for name, value in saved["preprocessing"].items():
            setattr(backbone, name, value)
        scorers = {
            name: build(entry["config"]).load_state_dict(entry["state"])
            for name, entry in payload["scorers"].items()
        }
        detector = cls(
            backbone=backbone.eval(),
            backbone_config=saved["config"],
            scorers=scorers,
            scorer_configs={name: entry["config"] for name, entry in payload["scorers"].items()},
            normal_test_scores=payload["normal_test_scores"],
            pseudo_labels=payload["pseudo_labels"],
            num_clusters=payload["num_clusters"],
            artifacts=payload["artifacts"],
            metrics=payload["metrics"],
            config=payload["config"],
            normal_keep=payload["normal_keep"],
        )
        return detector.to(device)

    # -- scoring --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def to(self, device: str | torch.device | None = None) -> Detector:
        """Move the backbone to ``device`` (None: a GPU when available, else the CPU)."""
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.backbone.to(device)
        return self

    def thresholds(self, keep: float | None = None) -> dict[str, float]:
        """Per scorer, the threshold keeping ``keep`` (default: the saved fraction) of the normal
        test images of the run; a higher score is flagged OOD."""
        keep = self.normal_keep if keep is None else keep
        scores = self.normal_test_scores
        return {name: threshold_keeping(values, keep) for name, values in scores.items()}

    def is_ood(
        self, scores: Mapping[str, torch.Tensor], keep: float | None = None
    ) -> dict[str, torch.Tensor]:
        """Per scorer, whether each score lies above that scorer's threshold."""
        thresholds = self.thresholds(keep)
        return {name: values > thresholds[name] for name, values in scores.items()}

    @property
    def batch_size(self) -> int:
        """The batch size the run extracted features with (``data.batch_size``), or 64."""
        return int(((self.config or {}).get("data") or {}).get("batch_size", DEFAULT_BATCH_SIZE))

    def score(
        self, images: ImageInput | Sequence[ImageInput], batch_size: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Anomaly scores of PIL images, image files or folders of images, in input order.

        Raises when an input cannot be read; :meth:`score_images` skips such inputs instead.
        """
        if isinstance(images, Image.Image | str | Path):
            images = [images]
        items = [
            found
            for item in images
            for found in ([item] if isinstance(item, Image.Image) else image_paths([item]))
        ]
        result = self.score_images(items, batch_size=batch_size)
        if result.unreadable:
            raise RuntimeError("\n".join(result.unreadable.values()))
        return result.scores

    def score_images(
        self,
        images: Sequence[ImageInput],
        batch_size: int | None = None,
        num_workers: int = 0,
        progress: bool = False,
        group_sizes: Sequence[int] | None = None,
        processes: int = 1,
    ) -> ScoredImages:
        """Scores of every readable input; unreadable ones are listed with the reason.

        ``group_sizes`` splits ``images`` into consecutive groups batched on their own (a batch
        never spans two groups). CPU convolutions give slightly different features for the same
        image in batches of other sizes, so the run's images, grouped as its splits and batched
        with its ``data.batch_size``, get exactly the run's features and scores. The features of
        all readable inputs are scored together, as the run scored each split. ``batch_size``
        defaults to the run's (:attr:`batch_size`). ``processes`` > 1 extracts the features
        data-parallel (one GPU each for a CUDA detector, else CPU processes sharing the threads):
        the same batches, so the same scores.
        """
        batches = batches_within(group_sizes or [len(images)], batch_size or self.batch_size)
        if processes == 1:
            found = extract(self.backbone, images, batches, self.device, num_workers, progress)
        else:
            devices = process_devices(self.device, processes)
            threads = max(1, torch.get_num_threads() // processes)
            found = extract_parallel(self.backbone, images, batches, devices, threads, num_workers)
            self.backbone.to(self.device)
        if not found.features:
            empty = {name: torch.empty(0) for name in self.scorers}
            return ScoredImages([], empty, found.unreadable)
        features = torch.cat(found.features).to(self.device)
        with torch.inference_mode():
            scores = {name: scorer.score(features) for name, scorer in self.scorers.items()}
        return ScoredImages(found.indices, scores, found.unreadable)
