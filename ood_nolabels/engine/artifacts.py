"""The one cached-stage helper: every training stage trains or loads through :class:`CachedStage`.

A stage's artifact is the directory ``<root>/<stage>-<digest>/``, where the digest covers exactly
what the stage depends on (its config, its upstream artifact, the run seed, and the trainer
settings that change what is learned when they differ from the defaults: see
:func:`ood_nolabels.engine.runtime.training_key`). That directory only
ever appears complete: the stage trains into ``<stage>-<digest>.partial/`` (which also keeps the
resume checkpoint of an interrupted run), writes the marker ``stage.json`` last and is renamed
into place. A file lock around train-or-load makes a second run that needs the same stage wait and
then load instead of training it again or reading a half-written file. Each stage seeds its random
stream from (run seed, digest), so its result depends only on its inputs, never on which stages
happened to be cached or trained before it in this process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
import torch.distributed as dist
from filelock import FileLock, Timeout
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf

from ood_nolabels.core.atomic import atomic_save, check_finite, storage_error

log = logging.getLogger(__name__)

T = TypeVar("T")
MARKER = "stage.json"
# What a truncated or garbled artifact raises from torch.load / json.
UNREADABLE = (
    EOFError,
    OSError,
    RuntimeError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    json.JSONDecodeError,
    KeyError,
)


def config_digest(*parts: Any) -> str:
    """A short stable hash of config parts (DictConfigs, plain containers, strings, numbers)."""

    def plain(part: Any) -> Any:
        if isinstance(part, DictConfig | ListConfig):
            return OmegaConf.to_container(part, resolve=True)
        return part

    payload = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def stage_seed(seed: int, digest: str) -> int:
    """The seed of one stage's random stream: a function of the run seed and the stage's key."""
    return int(hashlib.sha256(f"{seed}:{digest}".encode()).hexdigest()[:8], 16)


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if distributed():
        dist.barrier()


def save_artifact(obj: object, path: Path) -> None:
    """``torch.save`` from global rank 0 only, through a temporary file renamed into place.

    Non-finite tensors are refused (:func:`check_finite`), so garbage is never cached.
    """
    check_finite(obj, path)
    if rank_zero_only.rank == 0:
        atomic_save(obj, path)


class UnreadableArtifact(OSError):
    """An artifact file that cannot be read (missing, truncated, garbled), named."""


def load_artifact(path: Path, mmap: bool = False) -> Any:
    """A stage's file; one that cannot be read raises :class:`UnreadableArtifact` naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except UNREADABLE as error:
        raise UnreadableArtifact(f"cannot read {path} ({type(error).__name__}: {error})") from error


def load_rows(path: Path, count: int) -> torch.Tensor:
    """A per-image artifact (features, neighbours, pseudo-labels) of ``count`` images; one with
    another number of rows belongs to other images and is refused as unreadable (its stage is
    then moved aside and trained again)."""
    rows = load_artifact(path)
    if len(rows) != count:
        raise UnreadableArtifact(
            f"{path} holds {len(rows)} rows for {count} images: it was made from other images "
            "(files rewritten with their old sizes and times?)"
        )
    return rows


def verify_artifact(path: Path) -> None:
    """Open ``path`` without reading its tensors (memory-mapped): a truncated or garbled file
    fails now, when its stage can still be moved aside and trained again, not when it is used."""
    load_artifact(path, mmap=True)


@dataclass
class ArtifactStore:
    """Where stages keep their artifacts.

    ``seed`` is the run seed every stage key includes; ``training`` the trainer settings that
    every stage key includes too when there are any (none for a default fp32 run, whose keys are
    those of the stage's own inputs alone).
    """

    root: Path
    seed: int = 0
    # called with (stage directory name, outcome, seconds) when a stage is ready
    on_ready: Callable[[str, str, float], None] | None = None
    training: dict[str, Any] = field(default_factory=dict)

    def interrupted(self) -> str:
        """What an interrupted run leaves here, and how to continue it."""
        root = Path(self.root)
        partial = sorted(root.glob("*.partial")) if root.is_dir() else []
        resumable = [p.name for p in partial if (p / "checkpoints" / "last.ckpt").is_file()]
        complete = sorted(p.name for p in root.glob("*-*") if (p / MARKER).is_file())
        lines = [f"the artifact directory {root} keeps {len(complete)} complete stage(s)"]
        if resumable:
            lines.append(f"and the last epoch checkpoint of {', '.join(resumable)}")
        return (
            " ".join(lines)
            + ". Rerun the same command to continue: complete stages are reused"
            + (", the interrupted one resumes from its checkpoint." if resumable else ".")
        )

    def stage(self, name: str, *depends_on: Any) -> CachedStage:
        """The stage keyed by ``depends_on``. Creating it seeds the global random generators from
        (run seed, key), so the modules a stage builds next start the same in every run."""
        extra = [{"trainer": self.training}] if self.training else []
        digest = config_digest(name, self.seed, *depends_on, *extra)
        seed = stage_seed(self.seed, digest)
        stage = CachedStage(Path(self.root), name, digest, seed, self.on_ready)
        L.seed_everything(stage.seed, workers=True, verbose=False)
        return stage


class CachedStage:
    """Train-or-load of one stage's artifact directory (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        stage: str,
        digest: str,
        seed: int,
        on_ready: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.stage = stage
        self.name = f"{stage}-{digest}"
        self.directory = root / self.name
        self.work_dir = root / f"{self.name}.partial"
        self.lock_path = root / f"{self.name}.lock"
        self.seed = seed
        self.outcome = "pending"  # then "trained", "resumed" or "reused"
        self.on_ready = on_ready

    @property
    def complete(self) -> bool:
        return (self.directory / MARKER).is_file()

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics the stage recorded when it was trained (clustering accuracy, ...)."""
        return dict(json.loads((self.directory / MARKER).read_text()).get("metrics", {}))

    def run(self, train: Callable[[Path], dict[str, float] | None], load: Callable[[Path], T]) -> T:
        """``load(directory)`` of the complete artifact, training it first with ``train(work_dir)``
        when it is missing. An artifact that cannot be read is moved aside and trained again."""
        start = time.perf_counter()
        self._ensure(train)
        try:
            result = load(self.directory)
        except UNREADABLE as error:
            moved = self._quarantine()
            log.warning(
                "%s: artifact is unreadable (%s); moved it to %s and training it again",
                self.name,
                error,
                moved,
            )
            self._ensure(train)
            result = load(self.directory)
        seconds = time.perf_counter() - start
        log.info("%s: %s in %.1f s", self.name, self.outcome, seconds)
        if self.on_ready is not None:
            self.on_ready(self.name, self.outcome, seconds)
        return result

    # -- internals ------------------------------------------------------------------------------
    def _ensure(self, train: Callable[[Path], dict[str, float] | None]) -> None:
        complete = self.complete
        if distributed():  # every rank follows rank 0, which holds the lock
            decision = [complete]
            dist.broadcast_object_list(decision, src=0)
            complete = decision[0]
        if complete:
            self.outcome = "reused"
            return
        if rank_zero_only.rank != 0:
            self._train(train)  # joins rank 0's trainer; rank 0 writes the files
        else:
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.lock_path))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                log.info("%s: waiting for another run that is training it", self.name)
                lock.acquire()
            try:
                if self.complete:
                    self.outcome = "reused"
                else:
                    self._train(train)
            finally:
                lock.release()
        barrier()

    def _train(self, train: Callable[[Path], dict[str, float] | None]) -> None:
        resumed = (self.work_dir / "checkpoints" / "last.ckpt").is_file()
        self.outcome = "resumed" if resumed else "trained"
        L.seed_everything(self.seed, workers=True, verbose=False)
        start = time.perf_counter()
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            metrics = train(self.work_dir) or {}
            if rank_zero_only.rank == 0:
                self._publish(metrics, time.perf_counter() - start)
        except (OSError, RuntimeError) as error:  # torch reports a full disk as RuntimeError
            translated = storage_error(error, self.work_dir)
            if translated is None:
                raise
            raise translated from error

    def _publish(self, metrics: dict[str, float], seconds: float) -> None:
        """Marker last, then one rename: readers see a complete directory or none."""
        shutil.rmtree(self.work_dir / "checkpoints", ignore_errors=True)
        marker = {"stage": self.name, "seed": self.seed, "seconds": seconds, "metrics": metrics}
        (self.work_dir / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        if self.directory.exists():  # a directory without marker: left by an older version
            self._quarantine()
        self.work_dir.rename(self.directory)

    def _quarantine(self) -> Path:
        target = self.directory.with_name(f"{self.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        if rank_zero_only.rank == 0 and self.directory.exists():
            self.directory.rename(target)
        barrier()
        return target
