"""The W&B logger all stages of a job share, told by the runtime when a new stage starts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only


class StagedWandbLogger(WandbLogger):
    """A :class:`WandbLogger` that all stages of a job share.

    Every stage's trainer counts its steps from 0. Stage by stage (:meth:`start_stage`), this
    logger shifts ``trainer/global_step`` so it keeps increasing through the job, and logs the
    stage's own step as ``<stage>/step``, the x-axis of the ``<stage>/*`` charts; the per-epoch
    OOD metrics (``ood_epoch/*``) are charted against ``epoch``.
    """

    def __init__(self, *args: Any, quiet: bool = True, **kwargs: Any) -> None:
        if quiet and "settings" not in kwargs:  # no run-history printout at the end of each job
            import wandb

            kwargs["settings"] = wandb.Settings(quiet=True)
        super().__init__(*args, **kwargs)
        self.stage: str | None = None
        self.offset = 0
        self.last_step = -1

    @rank_zero_only
    def start_stage(self, stage: str) -> None:
        self.stage = stage
        self.offset = self.last_step + 1
        self.experiment.define_metric(f"{stage}/step")
        self.experiment.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
        self.experiment.define_metric("ood_epoch/*", step_metric="epoch")

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is None:
            self.experiment.log(dict(metrics))
            return
        job_step = self.offset + step
        self.last_step = max(self.last_step, job_step)
        payload = {**metrics, "trainer/global_step": job_step}
        if self.stage is not None:
            payload[f"{self.stage}/step"] = step
        self.experiment.log(payload)


def start_stage(loggers: Sequence[Logger], stage: str) -> None:
    for logger in loggers:
        if isinstance(logger, StagedWandbLogger):
            logger.start_stage(stage)
