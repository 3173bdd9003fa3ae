"""Hydra entry point: ``python -m ood_nolabels.train +experiment=<name> [overrides]``.

The only module that reads the composed config: it builds the data, loggers and artifact store
into a :class:`~ood_nolabels.runtime.Runtime`, instantiates the method (whose inputs are wired in
its yaml) and runs it, then prints the results table and writes ``metrics.json``, the per-image
``scores.csv`` and the resolved config into the run directory.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ood_nolabels.clustering.auto_k import AUTO, choose_num_clusters
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.methods import RunResult
from ood_nolabels.preflight import check_clusters_fit_the_data, check_stage_recipes, check_trainer
from ood_nolabels.reporting import epoch_auroc_table, results_table, write_metrics
from ood_nolabels.runtime import Runtime
from ood_nolabels.scoring.evaluation import EvaluationResult
from ood_nolabels.stages.cache import ArtifactStore
from ood_nolabels.utils.wandb_mode import use_offline_wandb_without_credentials

log = logging.getLogger(__name__)


def build_loggers(cfg: DictConfig) -> list[Logger]:
    if "wandb" in (cfg.get("logger") or {}):
        log.info("W&B mode: %s", use_offline_wandb_without_credentials())
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    for logger in loggers:  # the whole config, so ablations can be compared by any value
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def build_runtime(cfg: DictConfig) -> Runtime:
    return Runtime(
        datamodule=instantiate(cfg.data),
        artifacts=ArtifactStore(Path(cfg.paths.artifact_dir), cfg.seed),
        trainer=cfg.trainer,
        callbacks=cfg.get("callbacks") or {},
        loggers=build_loggers(cfg),
        data_key=OmegaConf.to_container(cfg.dataset, resolve=True),
    )


def preflight(cfg: DictConfig, runtime: Runtime) -> None:
    """Everything checkable before the first stage trains (see :mod:`ood_nolabels.preflight`)."""
    check_trainer(cfg.trainer)
    stages = {f"clustering.{name}": cfg.clustering.get(name) for name in ("simclr", "scan")}
    stages |= {"clustering.selflabel": cfg.clustering.get("selflabel"), "finetune": cfg.finetune}
    check_stage_recipes(stages)
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

    Raises after writing the results when a scorer failed, so such a run never exits 0.
    """
    output_dir = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, output_dir)
    runtime = build_runtime(cfg)
    preflight(cfg, runtime)
    chosen = resolve_auto_k(cfg, runtime, output_dir)
    result: RunResult = instantiate(cfg.method)(runtime)
    result.metrics |= chosen
    report(result, output_dir)
    failures = result.evaluation.failures if result.evaluation else {}
    if failures:
        raise RuntimeError(
            f"{len(failures)} scorer(s) failed; the other results are in {output_dir}:\n"
            + "\n".join(f"  {scorer}: {error}" for scorer, error in failures.items())
        )
    return result.metrics


@rank_zero_only
def save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config_resolved.yaml", resolve=True)


def write_scores(evaluation: EvaluationResult, output_dir: Path) -> Path:
    """``scores.csv``: one row per scored image (split, index in the split, scorer, score)."""
    path = output_dir / "scores.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["split", "index", "scorer", "score"])
        for scorer, splits in evaluation.scores.items():
            for split, scores in splits.items():
                writer.writerows(
                    (split, i, scorer, f"{s:.8g}") for i, s in enumerate(scores.tolist())
                )
    return path


@rank_zero_only
def report(result: RunResult, output_dir: Path) -> None:
    metrics = result.metrics
    path = write_metrics(metrics, output_dir)
    if result.evaluation is not None:
        write_scores(result.evaluation, output_dir)
    clustering = {k: v for k, v in metrics.items() if k.startswith("cluster/")}
    if clustering:
        print("\nClustering of the normal training set (labels used for evaluation only):")
        print("\n".join(f"  {name}: {value:.4f}" for name, value in sorted(clustering.items())))
    print(f"\nOOD detection (%, OOD = positive class):\n{results_table(metrics)}\n")
    epochs = epoch_auroc_table(metrics)
    if epochs:
        print(f"AUROC of each epoch's model vs the weight-averaged model:\n{epochs}\n")
    log.info("metrics written to %s", path)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
