"""Hydra entry point: ``python -m ood_nolabels.train +experiment=<name> [overrides]``.

It only wires: it builds the run's :class:`~ood_nolabels.engine.runtime.Runtime` (data, artifact
store, trainer settings, loggers), instantiates the method from ``cfg.method`` (a
:class:`~ood_nolabels.methods.base.Method`) and calls its ``preflight`` and ``run``, then writes
what the run leaves (``metrics.json``, ``scores.csv``, ``detector.pt``, the figures and the
resolved config) into the run directory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ood_nolabels.core.timings import Timings
from ood_nolabels.engine.artifacts import ArtifactStore
from ood_nolabels.engine.console import quiet_libraries
from ood_nolabels.engine.runtime import Runtime, claim_launch_rank, loader_key, training_key
from ood_nolabels.engine.settings import check_settings
from ood_nolabels.methods.base import Method, RunResult
from ood_nolabels.report.config_tree import print_config_tree
from ood_nolabels.report.loggers import build_loggers, finish_loggers, job_identity
from ood_nolabels.report.summary import report, save_detector

log = logging.getLogger(__name__)


def store_of(cfg: DictConfig, timings: Timings | None = None) -> ArtifactStore:
    """The run's artifact store: stage keys hold the run seed, and the trainer and loader
    settings that change what is learned."""
    return ArtifactStore(
        Path(cfg.paths.artifact_dir),
        cfg.seed,
        on_ready=None if timings is None else timings.add,
        training=training_key(cfg.trainer) | loader_key(cfg.data),
    )


def build_runtime(cfg: DictConfig, loggers: Sequence[Logger] = ()) -> Runtime:
    """The run's shared resources; ``loggers`` from :func:`build_loggers` (none by default)."""
    timings = Timings()
    store = store_of(cfg, timings)
    return Runtime(
        datamodule=instantiate(cfg.data),
        artifacts=store,
        trainer=cfg.trainer,
        callbacks=cfg.get("callbacks") or {},
        loggers=list(loggers),
        timings=timings,
    )


def record_num_clusters(
    cfg: DictConfig, result: RunResult, loggers: Sequence[Logger], output_dir: Path
) -> None:
    """``K=auto``: the K the method chose replaces ``auto`` in the saved config and the
    loggers' run config, as if it had been given."""
    if cfg.get("K") != result.num_clusters and result.num_clusters is not None:
        cfg.K = result.num_clusters
        save_resolved_config(cfg, output_dir)
        for logger in loggers:
            logger.log_hyperparams({"K": cfg.K})


def run(cfg: DictConfig) -> dict[str, float]:
    """Run the configured method and return its metrics.

    Raises after writing the results when a scorer failed, so such a run never exits 0. The
    job's W&B run is finished either way, so the next job of a sweep gets a run of its own.
    """
    check_settings(cfg)
    claim_launch_rank(cfg.trainer)
    quiet_libraries(cfg.verbose)
    if cfg.print_config:
        print_config_tree(cfg)
    output_dir = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, output_dir)
    loggers = build_loggers(cfg, job_identity(cfg.task_name, cfg.get("tags") or ()))
    failed = True
    try:
        runtime = build_runtime(cfg, loggers)
        method: Method = instantiate(cfg.method)
        runtime.preflight()
        method.preflight(runtime)
        result = method.run(runtime)
        record_num_clusters(cfg, result, loggers, output_dir)
        save_detector(result, OmegaConf.to_container(cfg, resolve=True), output_dir)
        report(result, runtime, cfg.get("plots") or {}, output_dir, cfg.seed)
        failures = result.evaluation.failures if result.evaluation else {}
        if failures:
            raise RuntimeError(
                f"{len(failures)} scorer(s) failed; the other results are in {output_dir}:\n"
                + "\n".join(f"  {scorer}: {error}" for scorer, error in failures.items())
            )
        failed = False
    except (KeyboardInterrupt, SystemExit) as stop:  # Lightning turns Ctrl-C into exit code 1
        if not isinstance(stop, SystemExit) or stop.code not in (0, None):
            log.error("interrupted: %s", store_of(cfg).interrupted())
        raise
    finally:
        finish_loggers(loggers, failed)
    return result.metrics


@rank_zero_only
def save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config_resolved.yaml", resolve=True)


def optimized_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The value Hydra sweepers (Optuna) optimise; a name the run did not produce is an error."""
    if not name:
        return None
    if name not in metrics:
        produced = "\n  ".join(sorted(metrics))
        raise KeyError(
            f"optimized_metric={name!r} is not a metric of this run; it produced:\n  {produced}"
        )
    return metrics[name]


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return optimized_value(run(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
