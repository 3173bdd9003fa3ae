"""Sweeps (``python -m ood_nolabels.train -m``): one W&B run per job and a results table across
jobs; each stage trained once per distinct config.
"""

import json
import os
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ood_nolabels.results import (
    main,
)

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.slow
def test_k_and_scorer_sweep_trains_each_stage_once(tmp_path):
    """A 2x2 sweep: SimCLR and the neighbours once, SCAN / self-label / finetune once per K."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ood_nolabels.train",
            "-m",
            "+experiment=ours_synthetic",
            "scorer=knn,mahalanobis",
            "K=3,4",
            # the point is which stages train: every stage tiny
            "+debug=tiny",
            "logger=csv",
            "callbacks=none",
            f"paths.artifact_dir={tmp_path}/artifacts",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    complete = [p.name for p in (tmp_path / "artifacts").iterdir() if p.suffix == ""]
    stages = Counter(name.split("-")[0] for name in complete)
    assert stages == {"simclr": 1, "mining": 1, "scan": 2, "selflabel": 2, "finetune": 2}
    jobs = [
        json.loads((tmp_path / "sweep" / str(j) / "metrics.json").read_text()) for j in range(4)
    ]
    # Hydra sweeps the last override fastest: jobs are (knn, 3), (knn, 4), (maha, 3), (maha, 4).
    for job, scorer in zip(jobs, ["knn", "knn", "mahalanobis", "mahalanobis"], strict=True):
        assert f"ood/synthetic_4_5/{scorer}/auroc" in job
    assert jobs[0]["cluster/acc"] == jobs[2]["cluster/acc"]  # same K, same stage-1 artifact
