"""What every training stage's LightningModule shares: optimizer / scheduler factories (Hydra
partials) and a finite-loss guard."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from functools import partial

import lightning as L
import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

OptimizerFactory = Callable[..., Optimizer]
SchedulerFactory = Callable[..., LRScheduler]
INTERVALS = ("epoch", "step")


def per_step(factory: SchedulerFactory) -> SchedulerFactory:
    """Mark a scheduler factory as stepped after every optimizer step (not every epoch)."""
    factory.interval = "step"
    return factory


@per_step
def cosine_per_step(optimizer: Optimizer, total_steps: int, eta_min: float = 0.0) -> LRScheduler:
    """Cosine annealing over a whole run, stepped per batch.

    The first optimizer step trains at the optimizer's ``lr`` and the last of the
    ``total_steps`` at exactly ``eta_min`` (the paper's finetuning: 1e-5 -> 1e-6).
    :class:`StageModule` passes ``total_steps`` (Lightning's estimate over all epochs, devices
    and gradient accumulation).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return CosineAnnealingLR(optimizer, T_max=max(total_steps - 1, 1), eta_min=eta_min)


def declared_interval(factory: SchedulerFactory | None) -> str:
    """The ``interval`` a (partial of a) scheduler factory declares; ``"epoch"`` by default."""
    target = factory.func if isinstance(factory, partial) else factory
    return getattr(target, "interval", "epoch")


def takes_total_steps(factory: SchedulerFactory) -> bool:
    try:
        return "total_steps" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no introspectable signature
        return False


class StageModule(L.LightningModule):
    """Base LightningModule: ``optimizer`` / ``scheduler`` are Hydra partials (``_partial_: true``).

    The scheduler steps once per epoch (cosine annealing over the stage's epochs in the recipes)
    unless it is declared per step (:func:`per_step`, e.g. :func:`cosine_per_step`) or
    ``scheduler_interval="step"`` is given. A scheduler factory with a ``total_steps`` parameter
    receives the number of optimizer steps of the whole fit.
    """

    def __init__(
        self,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str | None = None,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval or declared_interval(scheduler)
        if self.scheduler_interval not in INTERVALS:
            raise ValueError(
                f"scheduler_interval={self.scheduler_interval!r}; expected one of {INTERVALS}"
            )

    def total_steps(self) -> int:
        """Optimizer steps of the whole fit (all epochs), as Lightning estimates them."""
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise ValueError(
                "a per-step scheduler needs a finite run: set the trainer's max_epochs or max_steps"
            )
        return int(steps)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {"optimizer": optimizer}
        if takes_total_steps(self.scheduler_factory):
            kwargs["total_steps"] = self.total_steps()
        scheduler = self.scheduler_factory(**kwargs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def checked(self, loss: torch.Tensor) -> torch.Tensor:
        """Stop with a clear message instead of training on a NaN/inf loss."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{type(self).__name__}: loss is {loss.item()} at epoch {self.current_epoch}, "
                f"step {self.global_step}. Lower the learning rate (the stage's optimizer.lr) or "
                "check the input data; rerunning resumes from the last epoch checkpoint."
            )
        return loss
