"""Hydra entry point: ``python -m ood_nolabels.train +experiment=<name> [overrides]``.

The only module that reads the composed config: it builds the data, loggers and artifact store
into a :class:`~ood_nolabels.runtime.Runtime`, instantiates the method (whose inputs are wired in
its yaml) and runs it, then prints the results table and writes ``metrics.json``, the per-image
``scores.csv`` and the resolved config into the run directory.
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

from ood_nolabels.clustering.auto_k import AUTO, choose_num_clusters
from ood_nolabels.console import Timings, quiet_libraries
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.detector import DETECTOR_FILE
from ood_nolabels.diagnostics import write_diagnostics
from ood_nolabels.loggers import JobIdentity, finish_loggers, job_identity
from ood_nolabels.methods import RunResult
from ood_nolabels.preflight import (
    check_clusters_fit_the_data,
    check_stage_modules,
    check_stage_recipes,
    check_trainer,
)
from ood_nolabels.reporting import epoch_auroc_table, results_table, write_metrics, write_scores
from ood_nolabels.runtime import Runtime
from ood_nolabels.stages.cache import ArtifactStore
from ood_nolabels.utils.wandb_mode import use_offline_wandb_without_credentials

log = logging.getLogger(__name__)


def build_loggers(cfg: DictConfig, job: JobIdentity) -> list[Logger]:
    """The ``logger`` group's loggers; a W&B logger without a name / group gets the job's."""
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
    # the whole config, so ablations can be compared by any value, and what the job was asked
    hyperparameters = OmegaConf.to_container(cfg, resolve=True)
    hyperparameters["job"] = {"overrides": job.overrides, "choices": job.choices}
    for logger in loggers:
        logger.log_hyperparams(hyperparameters)
    return loggers


def build_runtime(cfg: DictConfig, loggers: Sequence[Logger] = ()) -> Runtime:
    """The run's shared resources; ``loggers`` from :func:`build_loggers` (none by default)."""
    timings = Timings()
    return Runtime(
        datamodule=instantiate(cfg.data),
        artifacts=ArtifactStore(Path(cfg.paths.artifact_dir), cfg.seed, on_ready=timings.add),
        trainer=cfg.trainer,
        callbacks=cfg.get("callbacks") or {},
        loggers=list(loggers),
        data_key=OmegaConf.to_container(cfg.dataset, resolve=True),
        timings=timings,
    )


def preflight(cfg: DictConfig, runtime: Runtime) -> None:
    """Everything checkable before the first stage trains (see :mod:`ood_nolabels.preflight`)."""
    check_trainer(cfg.trainer)
    stages = {f"clustering.{name}": cfg.clustering.get(name) for name in ("simclr", "scan")}
    stages |= {"clustering.selflabel": cfg.clustering.get("selflabel"), "finetune": cfg.finetune}
    check_stage_recipes(stages)
    check_stage_modules(cfg.clustering)
    runtime.datamodule.setup()  # every data set present and readable
    if "num_clusters" in cfg.method and cfg.K != AUTO:
        check_clusters_fit_the_data(cfg.K, len(runtime.datamodule.images[NORMAL_TRAIN]))


def resolve_auto_k(cfg: DictConfig, runtime: Runtime, output_dir: Path) -> dict[str, float]:
    """``K=auto``: choose K on stage 1's mined neighbours (:mod:`ood_nolabels.clustering.auto_k`)
    and set it, so every ``${K}`` downstream sees the chosen number as if it had been given.
    Returns ``{"auto_k/K": K}`` for ``metrics.json`` (nothing when K was given)."""
    if cfg.K != AUTO or "num_clusters" not in cfg.method:
        return {}
    cfg.K = choose_num_clusters(runtime, cfg.clustering, output_dir, **cfg.auto_k)
    check_clusters_fit_the_data(cfg.K, len(runtime.datamodule.images[NORMAL_TRAIN]))
    save_resolved_config(cfg, output_dir)
    return {"auto_k/K": float(cfg.K)}


def run(cfg: DictConfig) -> dict[str, float]:
    """Run the configured method and return its metrics.

    Raises after writing the results when a scorer failed, so such a run never exits 0. The
    job's W&B run is finished either way, so the next job of a sweep gets a run of its own.
    """
    quiet_libraries(cfg.get("verbose", False))
    output_dir = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, output_dir)
    loggers = build_loggers(cfg, job_identity(cfg.task_name, cfg.get("tags") or ()))
    failed = True
    try:
        runtime = build_runtime(cfg, loggers)
        preflight(cfg, runtime)
        chosen = resolve_auto_k(cfg, runtime, output_dir)
        if chosen:  # the chosen K, not "auto", in the loggers' run config
            for logger in loggers:
                logger.log_hyperparams({"K": cfg.K})
        result: RunResult = instantiate(cfg.method)(runtime)
        result.metrics |= chosen
        save_detector(result, cfg, output_dir)
        report(result, runtime, cfg, output_dir)
        failures = result.evaluation.failures if result.evaluation else {}
        if failures:
            raise RuntimeError(
                f"{len(failures)} scorer(s) failed; the other results are in {output_dir}:\n"
                + "\n".join(f"  {scorer}: {error}" for scorer, error in failures.items())
            )
        failed = False
    finally:
        finish_loggers(loggers, failed)
    return result.metrics


@rank_zero_only
def save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config_resolved.yaml", resolve=True)


@rank_zero_only
def save_detector(result: RunResult, cfg: DictConfig, output_dir: Path) -> None:
    """``detector.pt``: the run's backbone, fitted scorers, thresholds, config and metrics."""
    if result.detector is not None:
        result.detector.config = OmegaConf.to_container(cfg, resolve=True)
        result.detector.metrics = dict(result.metrics)
        path = result.detector.save(output_dir / DETECTOR_FILE)
        source = ", ".join(result.detector.artifacts) or "the pretrained weights"
        log.info(
            "detector from %s written to %s (score images: ood-score %s <images>)",
            source,
            path,
            path,
        )


@rank_zero_only
def report(result: RunResult, runtime: Runtime, cfg: DictConfig, output_dir: Path) -> None:
    """``metrics.json``, ``scores.csv``, the figures, and the tables on the console."""
    metrics = result.metrics
    path = write_metrics(
        metrics | ({"detector": DETECTOR_FILE} if result.detector else {}), output_dir
    )
    if result.evaluation is not None:
        write_scores(result.evaluation, runtime.datamodule.images, output_dir)
    with runtime.timings.measure("figures", "drawn"):
        write_diagnostics(
            result,
            runtime.datamodule,
            cfg.get("plots") or {},
            output_dir / "plots",
            runtime.loggers,
            seed=cfg.seed,
        )
    clustering = {k: v for k, v in metrics.items() if k.startswith("cluster/")}
    if clustering:
        print("\nClustering of the normal training set (labels used for evaluation only):")
        print("\n".join(f"  {name}: {value:.4f}" for name, value in sorted(clustering.items())))
    print(f"\nOOD detection (%, OOD = positive class):\n{results_table(metrics)}\n")
    epochs = epoch_auroc_table(metrics)
    if epochs:
        print(f"AUROC of each epoch's model vs the weight-averaged model:\n{epochs}\n")
    print(f"Time (s):\n{runtime.timings.table()}\n")
    log.info("results in %s (metrics.json, scores.csv, plots/)", path.parent)


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
