"""Sweeps: one W&B run per job, a results table across jobs, the stage-aware W&B step axis."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ood_nolabels.engine.loggers import StagedWandbLogger
from ood_nolabels.report.loggers import job_identity, swept_values
from ood_nolabels.results import (
    clustering_frame,
    find_runs,
    load_runs,
    long_table,
    main,
    results_frame,
)

ROOT = Path(__file__).resolve().parents[1]


def wandb_records(path: Path):
    """The protobuf records of an offline ``run-<id>.wandb`` file (LevelDB log format: 32 KiB
    blocks of 7-byte-headed chunks after a 7-byte file header)."""
    from wandb.proto import wandb_internal_pb2

    data, position, pending = path.read_bytes(), 7, b""
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        if left < 7:  # block trailer
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending += chunk
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def offline_run(run_dir: Path) -> dict:
    """Name, group, config and final summary of the one offline W&B run in ``run_dir``."""
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    run: dict = {"config": {}, "summary": {}}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run |= {"name": record.run.display_name, "group": record.run.run_group}
            run["tags"] = list(record.run.tags)
            updates = record.run.config.update
        elif kind == "config":
            updates = record.config.update
        elif kind == "summary":
            for item in record.summary.update:
                run["summary"]["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
            continue
        else:
            continue
        run["config"] |= {u.key: json.loads(u.value_json) for u in updates}
    return run


@pytest.mark.slow
def test_a_sweep_gives_one_wandb_run_per_job_and_a_results_table(tmp_path):
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "ood_nolabels.train",
        "-m",
        "+experiment=scan_features_synthetic",
        "logger=wandb",
        "scorer=knn,mahalanobis",
        "K=2,3",
        "plots.embedding=false",
        "plots.retrieval=false",
        f"paths.artifact_dir={tmp_path}/artifacts",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "There is a wandb run already in progress" not in done.stderr

    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    runs = {job: offline_run(job) for job in jobs}
    assert len(runs) == 4
    names = sorted(run["name"] for run in runs.values())
    assert names == [
        "K=2,scorer=knn",
        "K=2,scorer=mahalanobis",
        "K=3,scorer=knn",
        "K=3,scorer=mahalanobis",
    ]
    assert len({run["group"] for run in runs.values()}) == 1
    for job, run in runs.items():
        k, scorer = (part.split("=")[1] for part in run["name"].split(","))
        assert run["config"]["K"] == int(k)
        assert list(run["config"]["scorer"]) == [scorer]
        assert "method:scan_features" in run["tags"]
        metrics = json.loads((job / "metrics.json").read_text())
        auroc = f"ood/synthetic_4_5/{scorer}/auroc"
        assert run["summary"][auroc] == pytest.approx(metrics[auroc])
        assert not any(
            f"/{other}/" in key
            for key in run["summary"]
            for other in {"knn", "mahalanobis"} - {scorer}
        )
        assert (job / "plots" / f"roc_{scorer}.png").is_file()

    # the results command: one row per (K, scorer), cells = the jobs' metrics.json, in %
    main([str(sweep)])
    table = pd.read_csv(sweep / "results.csv")
    assert list(table.columns) == ["K", "scorer", "synthetic_4_5"]
    assert len(table) == 4
    for job in jobs:
        overrides = dict(
            o.split("=")
            for o in yaml.safe_load((job / ".hydra/overrides.yaml").read_text())
            if "=" in o
        )
        scorer = overrides["scorer"]
        metrics = json.loads((job / "metrics.json").read_text())
        row = table[(table["K"] == int(overrides["K"])) & (table["scorer"] == scorer)]
        expected = round(100 * metrics[f"ood/synthetic_4_5/{scorer}/auroc"], 1)
        assert float(row["synthetic_4_5"].iloc[0]) == pytest.approx(expected)
    assert "| K | scorer" in (sweep / "results.md").read_text()


def fake_run(directory: Path, overrides: list[str], metrics: dict[str, float]) -> Path:
    (directory / ".hydra").mkdir(parents=True)
    (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory


def test_results_rows_are_the_varying_overrides_and_the_scorer(tmp_path):
    for job, (k, value) in enumerate([("4", 0.91), ("6", 0.955)]):
        fake_run(
            tmp_path / str(job),
            ["+experiment=digits", f"K={k}", "scorer=all"],
            {
                "ood/digits_6_9/knn/auroc": value,
                "ood/digits_6_9/mahalanobis/auroc": value - 0.1,
                "ood/digits_6_9/knn/fpr95": 0.2,
                "ood_epoch0/digits_6_9/knn/auroc": 0.5,  # per-epoch values stay out
                "cluster/acc": 0.99,
                "detector": "detector.pt",  # non-numeric entries are ignored
            },
        )
    runs = load_runs(find_runs([tmp_path]))
    frame = results_frame(long_table(runs))
    assert frame.index.names == ["K", "scorer"]  # experiment and scorer=all do not vary
    assert frame.loc[("6", "knn"), "digits_6_9"] == 95.5
    assert frame.loc[("4", "mahalanobis"), "digits_6_9"] == 81.0
    both = results_frame(long_table(runs), ["auroc", "fpr95"])
    assert both.loc[("4", "knn"), ("digits_6_9", "fpr95")] == 20.0


def test_results_tabulate_the_clustering_once_per_setting(tmp_path):
    """Scorer jobs that share one clustering give one row; runs without labels give none."""
    for job, (k, scorer, acc) in enumerate(
        [("4", "knn", 0.66), ("4", "mahalanobis", 0.66), ("6", "knn", 0.996)]
    ):
        fake_run(
            tmp_path / str(job),
            [f"K={k}", f"scorer={scorer}"],
            {"ood/d/knn/auroc": 0.9, "cluster/acc": acc, "cluster/nmi": 0.8, "cluster/ari": 0.7},
        )
    fake_run(tmp_path / "unlabeled", ["K=8", "scorer=knn"], {"ood/d/knn/auroc": 0.9})
    frame = clustering_frame(load_runs(find_runs([tmp_path])))
    assert frame.index.tolist() == ["4", "6"] and frame.index.name == "K"
    assert frame.loc["6", "acc"] == 99.6 and frame.loc["4", "ari"] == 70.0
    assert list(frame.columns) == ["acc", "nmi", "ari"]


def test_results_command_on_a_clustering_sweep_writes_the_clustering_table(tmp_path, capsys):
    for seed, acc in [("0", 0.663), ("1", 0.995)]:
        fake_run(
            tmp_path / seed, ["+experiment=stage1_digits", f"seed={seed}"], {"cluster/acc": acc}
        )
    main([str(tmp_path), "--wandb", "off"])
    written = (tmp_path / "results.md").read_text()
    assert "Clustering of the normal training set" in written and "OOD detection" not in written
    assert "| seed | acc  |" in written and "| 0    | 66.3 |" in written
    assert (tmp_path / "clustering.csv").is_file() and not (tmp_path / "results.csv").exists()
    fake_run(tmp_path / "nothing", ["seed=2"], {"simclr/train_loss": 1.0})
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "nothing")])
    assert exit_.value.code == 2
    assert "no final OOD metrics (ood/...) nor clustering metrics" in capsys.readouterr().err


def test_results_command_explains_an_empty_or_missing_directory(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    assert exit_.value.code == 2 and "no metrics.json under" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "typo")])
    assert "typo does not exist" in capsys.readouterr().err


class RecordingRun:
    """Stands in for a W&B run: keeps what the logger sends."""

    def __init__(self):
        self.logged, self.defined = [], []

    def log(self, payload):
        self.logged.append(payload)

    def define_metric(self, name, **kwargs):
        self.defined.append((name, kwargs.get("step_metric")))


def test_stages_log_on_one_increasing_axis_and_their_own_step(tmp_path):
    logger = StagedWandbLogger(project="p", save_dir=str(tmp_path), offline=True)
    logger._experiment = RecordingRun()
    logger.start_stage("simclr")
    for step in range(3):
        logger.log_metrics({"simclr/train_loss": 1.0}, step=step)
    logger.start_stage("scan")
    logger.log_metrics({"scan/train_loss": 2.0}, step=0)
    logger.log_metrics({"cluster/acc": 0.9})  # outside a fit: no step

    logged = logger._experiment.logged
    assert [p.get("trainer/global_step") for p in logged] == [0, 1, 2, 3, None]
    assert logged[3]["scan/step"] == 0 and logged[2]["simclr/step"] == 2
    assert ("scan/*", "scan/step") in logger._experiment.defined
    assert ("ood_epoch/*", "epoch") in logger._experiment.defined


def test_job_identity_outside_hydra_is_the_task_name():
    identity = job_identity("digits", ["ours"])
    assert (identity.name, identity.group, identity.tags) == ("digits", "digits", ["ours"])


def test_a_sweep_job_is_named_after_the_values_the_sweep_varies(tmp_path):
    sweep = ["+experiment=digits", "scorer=knn,mahalanobis", "K=4,6", "logger=csv", "seed=1"]
    (tmp_path / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"overrides": {"task": sweep}}})
    )
    job = ["+experiment=digits", "scorer=mahalanobis", "K=6", "logger=csv", "seed=1"]
    assert swept_values(job, tmp_path) == "K=6,scorer=mahalanobis"
    assert swept_values(job, tmp_path / "elsewhere") is None  # no sweep file: Hydra's default


def test_results_over_seeds_report_mean_std_and_count(tmp_path, capsys):
    values = {("a", "0"): 0.90, ("a", "1"): 0.92, ("a", "2"): 0.97, ("b", "0"): 0.80}
    for (split, seed), value in values.items():
        fake_run(
            tmp_path / f"{split}{seed}",
            ["+experiment=fmnist", f"dataset.classes={split}", f"seed={seed}"],
            {"ood/held_out/knn/auroc": value, "cluster/acc": value - 0.2},
        )
    main([str(tmp_path), "--over", "seed", "--wandb", "off"])
    a = 100 * np.array([0.90, 0.92, 0.97])
    written = (tmp_path / "results.md").read_text()
    assert f"| a               | knn    | {a.mean():.1f} ± {a.std(ddof=1):.1f} (3) |" in written
    assert "| b               | knn    | 80.0 ± 0.0 (1) |" in written
    assert "mean ± std over seed (runs)" in written
    clustering = pd.read_csv(tmp_path / "clustering.csv", header=[0, 1], index_col=0)
    assert clustering.loc["a", ("mean", "acc")] == pytest.approx(round((a - 20).mean(), 1))
    assert clustering.loc["a", ("std", "acc")] == pytest.approx(round((a - 20).std(ddof=1), 1))
