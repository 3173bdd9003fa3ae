"""What the stage benchmarks share: the demo's composed config, a Runtime, interleaved timing.

Every stage benchmark times the framework and a bare PyTorch loop doing the same work on the same
data (same model, initial weights, batches and augmentations), alternating framework, bare,
framework, bare, ... and comparing medians: a ratio measured that way survives a noisy, shared
machine far better than absolute seconds.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from ood_nolabels.engine.artifacts import ArtifactStore
from ood_nolabels.engine.runtime import Runtime

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SEED = 0


@dataclass
class StageTiming:
    """Seconds per unit of work (an epoch, an evaluation) of the framework and the bare loop."""

    stage: str
    unit: str
    framework: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    workload: str = ""

    @property
    def framework_seconds(self) -> float:
        return statistics.median(self.framework)

    @property
    def bare_seconds(self) -> float:
        return statistics.median(self.bare)

    @property
    def ratio(self) -> float:
        return self.framework_seconds / self.bare_seconds

    def line(self) -> str:
        return (
            f"{self.stage}: framework {self.framework_seconds:.3f} s / {self.unit}, "
            f"bare PyTorch {self.bare_seconds:.3f} s -> ratio {self.ratio:.2f} "
            f"(median of {len(self.bare)} interleaved runs; {self.workload})"
        )


def interleaved(
    timing: StageTiming,
    framework: Callable[[], object],
    bare: Callable[[], object],
    repeats: int,
    units: int = 1,
) -> tuple[object, object]:
    """Time ``framework`` and ``bare`` alternately ``repeats`` times each (``units`` epochs per
    call); returns the last result of each for an equivalence check."""
    results: list[object] = [None, None]
    for _ in range(repeats):
        for slot, (fn, times) in enumerate(((framework, timing.framework), (bare, timing.bare))):
            start = time.perf_counter()
            results[slot] = fn()
            times.append((time.perf_counter() - start) / units)
    return results[0], results[1]


def demo_config(*overrides: str) -> DictConfig:
    """The ``make demo`` config (``+experiment=digits``) composed as the CLI does."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["+experiment=digits", "logger=none", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def runtime_for(cfg: DictConfig, work_dir: Path) -> Runtime:
    """A Runtime as ``train.py`` builds it (trainer and callbacks groups), without loggers."""
    trainer = copy.deepcopy(cfg.trainer)
    trainer.default_root_dir = str(work_dir)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    return Runtime(
        datamodule=datamodule,
        artifacts=ArtifactStore(work_dir / "artifacts", cfg.seed),
        trainer=trainer,
        callbacks=dict(cfg.callbacks or {}),
    )


def fresh_directory() -> Path:
    return Path(tempfile.mkdtemp(prefix="ood-bench-"))


def check_same_parameters(a: torch.nn.Module, b: torch.nn.Module, tolerance: float = 1e-4):
    """Stop unless two models ended with the same weights (the two loops did the same work)."""
    for (name, x), y in zip(a.named_parameters(), b.parameters(), strict=True):
        if not torch.allclose(x, y, rtol=tolerance, atol=tolerance):
            raise AssertionError(
                f"the framework and the bare loop ended with different weights: {name} differs "
                f"by up to {float((x - y).abs().max()):.2e}"
            )


def seeded(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` with the global random generators reset first: both loops draw the same batches."""

    def run():
        L.seed_everything(SEED, workers=True, verbose=False)
        return fn()

    return run


def framework_fit(
    runtime: Runtime, initial: L.LightningModule, loader, epochs: int
) -> Callable[[], L.LightningModule]:
    """The framework side of a stage benchmark: a fresh copy of ``initial`` trained by the
    stage's own ``Runtime.fit``."""

    def run() -> L.LightningModule:
        module = copy.deepcopy(initial)
        runtime.fit(module, loader, epochs, fresh_directory())
        return module

    return run


def bare_train(
    module: L.LightningModule,
    loader,
    epochs: int,
    loss_fn: Callable[[object], torch.Tensor],
    on_epoch_end: Callable[[int], None] = lambda epoch: None,
) -> None:
    """The bare loop: zero_grad, loss, backward, step; the module's own optimizer and scheduler
    (stepped per epoch or per batch as the module declares)."""
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    scheduler = configured["lr_scheduler"] if isinstance(configured, dict) else None
    for epoch in range(epochs):
        module.train()
        if hasattr(module, "on_train_epoch_start"):
            module.on_train_epoch_start()
        for batch in loader:
            optimizer.zero_grad()
            loss_fn(batch).backward()
            optimizer.step()
            if scheduler and scheduler["interval"] == "step":
                scheduler["scheduler"].step()
        if scheduler and scheduler["interval"] == "epoch":
            scheduler["scheduler"].step()
        on_epoch_end(epoch)


def machine() -> str:
    """One line describing where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus: Sequence[str] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return (
        f"{cpu}, {torch.get_num_threads()} torch threads, "
        f"GPUs: {', '.join(gpus) if gpus else 'none'}; torch {torch.__version__}, "
        f"lightning {L.__version__}, Python {platform.python_version()}"
    )


def compare_training(
    stage: str,
    workload: str,
    framework: Callable[[], torch.nn.Module],
    bare: Callable[[], torch.nn.Module],
    repeats: int,
    epochs: int,
) -> StageTiming:
    """Time ``framework`` and ``bare`` training (interleaved, each seeded alike) per epoch and
    check that both end with the same weights."""
    timing = StageTiming(stage, "epoch", workload=workload)
    ours, reference = interleaved(timing, seeded(framework), seeded(bare), repeats, epochs)
    check_same_parameters(ours, reference)
    return timing


def stage_main(measure: Callable[[int, int], StageTiming], epochs: int, repeats: int) -> None:
    """The command line of a stage benchmark: ``--epochs``, ``--repeats``; prints the ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--repeats", type=int, default=repeats)
    args = parser.parse_args()
    print(measure(args.epochs, args.repeats).line())
