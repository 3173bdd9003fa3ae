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

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ood_nolabels.data.datamodule import NORMAL_TEST
from ood_nolabels.data.folders import find_images
from ood_nolabels.data.images import UnsupportedImageMode, read_image_file
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.scoring.base import Scorer
from ood_nolabels.scoring.evaluation import OODEvaluation

DETECTOR_FILE = "detector.pt"
FORMAT = "ood-nolabels-detector"
VERSION = 1
NORMAL_KEEP = 0.95  # the default threshold keeps 95 % of the normal test images
DEFAULT_BATCH_SIZE = 64  # when the detector has no run config
PREPROCESSING = ("image_size", "mean", "std", "interpolation", "crop_pct", "resize_mode")
ImageInput = Image.Image | str | Path


def threshold_keeping(normal_scores: torch.Tensor, keep: float) -> float:
    """The lowest score at or below which at least a fraction ``keep`` of ``normal_scores`` lie.

    Images scoring above it are flagged OOD, so at most ``1 - keep`` of the normal test images
    were flagged in the run.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"the kept fraction of normal images must be in (0, 1], got {keep}")
    ordered = torch.sort(torch.as_tensor(normal_scores).flatten()).values
    if len(ordered) == 0:
        raise ValueError("no normal test scores to set a threshold from")
    position = math.ceil(round(keep * len(ordered), 9)) - 1  # round: 0.95 * 100 = 95.000...01
    return float(ordered[max(position, 0)])


def plain(config: Any) -> Any:
    """A config node as plain containers (what the detector file stores)."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return copy.deepcopy(config)


def without_pretrained_weights(config: Mapping[str, Any]) -> dict[str, Any]:
    """The backbone config with its pretrained-weights loading turned off: the detector's own
    weights replace them, so loading never needs the model hub or a local weights file."""
    config = dict(config)
    if "pretrained" in config:  # timm takes a bool, open_clip a tag (None: no weights)
        config["pretrained"] = False if isinstance(config["pretrained"], bool) else None
    if "checkpoint_path" in config:
        config["checkpoint_path"] = None
    return config


def image_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given and every image under each folder (sorted, at any depth), in input order.

    A path that does not exist, or a folder without images, is an error naming it.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = find_images(path)
            if not found:
                raise FileNotFoundError(f"no image files under the folder {path}")
            paths += found
        elif path.exists():
            paths.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return paths


@dataclass
class ScoredImages:
    """Scores of the readable inputs and why the others could not be read.

    ``scores[scorer]`` holds one score per entry of ``indices`` (positions in the input list).
    """

    indices: list[int]
    scores: dict[str, torch.Tensor]
    unreadable: dict[int, str] = field(default_factory=dict)


class _Inputs(Dataset):
    """``(tensor, position, None)`` per readable input, ``(None, position, reason)`` otherwise."""

    def __init__(self, items: Sequence[ImageInput], transform: Callable) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str | None]:
        item = self.items[index]
        try:
            image = item if isinstance(item, Image.Image) else read_image_file(Path(item))
        except (RuntimeError, UnsupportedImageMode) as error:
            return None, index, str(error)
        return self.transform(image), index, None


def batches_within(group_sizes: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of at most ``batch_size`` over consecutive groups, never spanning two."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    batches, start = [], 0
    for size in group_sizes:
        batches += [
            list(range(first, min(first + batch_size, start + size)))
            for first in range(start, start + size, batch_size)
        ]
        start += size
    return batches


def _collate(batch: list) -> tuple[torch.Tensor | None, list[int], dict[int, str]]:
    readable = [(tensor, index) for tensor, index, problem in batch if problem is None]
    unreadable = {index: problem for _, index, problem in batch if problem is not None}
    images = torch.stack([tensor for tensor, _ in readable]) if readable else None
    return images, [index for _, index in readable], unreadable


@dataclass
class Detector:
    """A backbone and its fitted scorers: ``score(images)`` -> anomaly scores (higher = OOD).

    Built by a run from its final evaluation (:meth:`from_evaluation`), written by
    :meth:`save`, restored by :meth:`load` without the training images or features.
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

    @classmethod
    def from_evaluation(
        cls,
        backbone: Backbone,
        backbone_config: DictConfig | Mapping[str, Any],
        evaluation: OODEvaluation,
        scorer_configs: DictConfig | Mapping[str, Any],
        pseudo_labels: torch.Tensor | None = None,
        num_clusters: int | None = None,
        artifacts: Sequence[str] = (),
    ) -> Detector | None:
        """The detector of ``evaluation``'s final result, or None when no scorer succeeded.

        Takes copies (the backbone's weights, each scorer's fitted state) so that later
        evaluations of other weights with the same callback, such as replayed epochs, which refit
        its scorers, do not change it. Call it right after the final evaluation.
        """
        final = evaluation.final
        if final is None:
            raise RuntimeError("the evaluation has no final result to build a detector from")
        names = [name for name in evaluation.scorers if name in final.scores]
        if not names:
            return None
        configs = plain(scorer_configs)
        scorers = {
            name: instantiate(configs[name]).load_state_dict(
                {k: v.clone() for k, v in evaluation.scorers[name].state_dict().items()}
            )
            for name in names
        }
        return cls(
            backbone=copy.deepcopy(backbone).cpu().eval(),
            backbone_config=plain(backbone_config),
            scorers=scorers,
            scorer_configs={name: configs[name] for name in names},
            normal_test_scores={name: final.scores[name][NORMAL_TEST].clone() for name in names},
            pseudo_labels=None if pseudo_labels is None else torch.as_tensor(pseudo_labels).clone(),
            num_clusters=num_clusters,
            artifacts=list(artifacts),
        )

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
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        torch.save(payload, temporary)
        temporary.replace(path)
        return path

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
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{path} is not an ood-nolabels detector file")
        if payload["version"] != VERSION:
            raise ValueError(
                f"{path} is a version {payload['version']} detector; this code reads version "
                f"{VERSION}: score it with the ood-nolabels release that wrote it"
            )
        saved = payload["backbone"]
        backbone = instantiate(without_pretrained_weights(saved["config"]))
        backbone.load_state_dict(saved["state_dict"])
        for name, value in saved["preprocessing"].items():
            setattr(backbone, name, value)
        scorers = {
            name: instantiate(entry["config"]).load_state_dict(entry["state"])
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
    ) -> ScoredImages:
        """Scores of every readable input; unreadable ones are listed with the reason.

        ``group_sizes`` splits ``images`` into consecutive groups batched on their own (a batch
        never spans two groups). CPU convolutions give slightly different features for the same
        image in batches of other sizes, so the run's images, grouped as its splits and batched
        with its ``data.batch_size``, get exactly the run's features and scores. The features of
        all readable inputs are scored together, as the run scored each split. ``batch_size``
        defaults to the run's (:attr:`batch_size`).
        """
        batches = batches_within(group_sizes or [len(images)], batch_size or self.batch_size)
        loader = DataLoader(
            _Inputs(images, self.backbone.transform()),
            batch_sampler=batches,
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
        )
        device = self.device
        chunks, indices, unreadable = [], [], {}
        self.backbone.eval()
        with torch.inference_mode():
            for batch, positions, problems in tqdm(
                loader, desc="scoring", unit="batch", disable=not progress
            ):
                unreadable |= problems
                if batch is not None:
                    chunks.append(self.backbone(batch.to(device, non_blocking=True)).float())
                    indices += positions
            if not chunks:
                return ScoredImages([], {name: torch.empty(0) for name in self.scorers}, unreadable)
            features = torch.cat(chunks)
            scores = {name: scorer.score(features) for name, scorer in self.scorers.items()}
        return ScoredImages(indices, scores, unreadable)
