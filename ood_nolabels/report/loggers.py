"""Experiment loggers for one job: its W&B run, named after its overrides and finished with it.

Hydra's local launcher runs the jobs of a ``--multirun`` sweep one after the other in one process;
without :func:`finish_loggers` the second job's ``WandbLogger`` would reuse the first job's run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ood_nolabels.report.wandb_mode import use_offline_wandb_without_credentials

log = logging.getLogger(__name__)

# Config groups whose choice tags a run (e.g. ``method:finetune``), to filter ablations on W&B.
TAGGED_GROUPS = ("experiment", "method", "dataset", "backbone", "pseudo_labels", "stage1")


@dataclass
class JobIdentity:
    """How a job is named and grouped on W&B, and what it was asked to run."""

    name: str
    group: str
    tags: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)


def swept_values(job_overrides: Sequence[str], sweep_dir: Path) -> str | None:
    """``K=4,scorer=knn``: this job's values of the keys the sweep varies (those given as lists
    on the ``--multirun`` command line, read back from the sweep's ``multirun.yaml``)."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    parser = OverridesParser.create()
    sweep = parser.parse_overrides(list(OmegaConf.load(path).hydra.overrides.task))
    swept = {o.key_or_group for o in sweep if o.is_sweep_override()}
    values = [o for o in parser.parse_overrides(list(job_overrides)) if o.key_or_group in swept]
    return ",".join(o.input_line for o in sorted(values, key=lambda o: o.key_or_group)) or None


def job_identity(task_name: str, tags: Sequence[str] = ()) -> JobIdentity:
    """Name = the swept values of a ``--multirun`` job (``K=4,scorer=knn``), else its overrides
    without ``experiment`` (Hydra's ``override_dirname``); group = the sweep for ``--multirun``
    jobs, the task name for single runs. Outside a Hydra app (Python API, tests) the task name
    serves for both."""
    if not HydraConfig.initialized():
        return JobIdentity(task_name, task_name, list(tags))
    hydra = HydraConfig.get()
    choices = {k: str(v) for k, v in hydra.runtime.choices.items() if not k.startswith("hydra/")}
    multirun = hydra.mode == RunMode.MULTIRUN
    group = f"{task_name}/{Path(hydra.sweep.dir).name}" if multirun else task_name
    tagged = [f"{g}:{choices[g]}" for g in TAGGED_GROUPS if choices.get(g) not in (None, "None")]
    swept = swept_values(hydra.overrides.task, Path(hydra.sweep.dir)) if multirun else None
    return JobIdentity(
        name=swept or hydra.job.override_dirname or task_name,
        group=group,
        tags=[*tags, *tagged],
        overrides=list(hydra.overrides.task),
        choices=choices,
    )


def build_loggers(cfg: DictConfig, job: JobIdentity) -> list[Logger]:
    """The ``logger`` group's loggers; a W&B logger without a name / group gets the job's. Every
    logger receives the whole config, so ablations can be compared by any value, and what the job
    was asked."""
    settings = cfg.get("logger") or {}
    if "wandb" in settings:
        log.info("W&B mode: %s", use_offline_wandb_without_credentials())
    loggers = []
    for name, logger_cfg in settings.items():
        if name == "wandb":  # the configured tags plus the choices'; name and group if unset
            tags = list(dict.fromkeys([*(logger_cfg.get("tags") or []), *job.tags]))
            logger_cfg = {**logger_cfg, "tags": tags}
            logger_cfg["name"] = logger_cfg.get("name") or job.name
            logger_cfg["group"] = logger_cfg.get("group") or job.group
        loggers.append(instantiate(logger_cfg))
    hyperparameters = OmegaConf.to_container(cfg, resolve=True)
    hyperparameters["job"] = {"overrides": job.overrides, "choices": job.choices}
    for logger in loggers:
        logger.log_hyperparams(hyperparameters)
    return loggers


@rank_zero_only
def finish_loggers(loggers: Sequence[Logger], failed: bool) -> None:
    """End the job's W&B run (exit code 1 when the job failed), so the next job gets its own."""
    for logger in loggers:
        logger.finalize("failed" if failed else "success")
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger._experiment.finish(exit_code=1 if failed else 0)
            logger._experiment = None
