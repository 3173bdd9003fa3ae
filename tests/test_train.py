"""The Hydra entry point end to end on the synthetic and embedded data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from sklearn.metrics import roc_auc_score

from ood_nolabels.train import run

ROOT = Path(__file__).resolve().parents[1]


def test_dn2_synthetic_run_matches_an_independent_computation(compose_cfg, capsys):
    cfg = compose_cfg("+experiment=dn2_synthetic", "logger=none", "callbacks=none")
    metrics = run(cfg)

    out_dir = Path(cfg.paths.output_dir)
    written = json.loads((out_dir / "metrics.json").read_text())
    assert written.pop("detector") == "detector.pt" and (out_dir / "detector.pt").is_file()
    assert written == pytest.approx(metrics)
    assert (out_dir / "config_resolved.yaml").is_file()
    assert "synthetic_4_5 | knn" in capsys.readouterr().out
    assert set(metrics) == {
        f"ood/synthetic_4_5/{s}/{m}"
        for s in ("knn", "mahalanobis")
        for m in ("auroc", "fpr95", "aupr_in", "aupr_out")
    }

    # Independent: direct forward passes, brute-force 1-NN cosine distance, sklearn AUROC.
    backbone = instantiate(cfg.backbone).eval()
    transform = backbone.transform()

    def features(source_cfg, split):
        images = instantiate(source_cfg).load(split)
        batch = torch.stack([transform(images.get_image(i)) for i in range(len(images))])
        with torch.no_grad():
            return torch.nn.functional.normalize(backbone(batch), dim=1).numpy()

    train = features(cfg.dataset, "train")
    normal, ood = features(cfg.dataset, "test"), features(cfg.ood.synthetic_4_5, "test")
    distance = lambda x: (1 - x @ train.T).min(1)  # noqa: E731
    y = np.r_[np.zeros(len(normal)), np.ones(len(ood))]
    expected = roc_auc_score(y, np.r_[distance(normal), distance(ood)])
    assert metrics["ood/synthetic_4_5/knn/auroc"] == pytest.approx(expected, abs=1e-3)


def test_missing_dataset_root_names_layout_and_download(compose_cfg, tmp_path):
    cfg = compose_cfg("dataset=cifar10", "logger=none", f"paths.data_dir={tmp_path}/nowhere")
    with pytest.raises(FileNotFoundError, match="(?s)cifar-10-batches-py.*download=true"):
        run(cfg)


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ood_nolabels.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


@pytest.mark.slow
def test_cli_runs_and_writes_results(tmp_path):
    result = cli("+experiment=dn2_synthetic", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| synthetic_4_5 | knn" in result.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["ood/synthetic_4_5/knn/auroc"] <= 1.0
    assert (tmp_path / "run" / "csv").is_dir()


def test_cli_unknown_experiment_is_a_clear_error(tmp_path):
    result = cli("+experiment=does_not_exist", cwd=tmp_path)
    assert result.returncode != 0
    assert "experiment/does_not_exist" in result.stderr
    assert "dn2_digits" in result.stderr  # Hydra lists the available presets


@pytest.mark.slow
def test_wandb_runs_offline_without_credentials(compose_cfg, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = compose_cfg("+experiment=dn2_synthetic", "logger=wandb", "callbacks=none")
    run(cfg)
    assert os.environ["WANDB_MODE"] == "offline"
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
