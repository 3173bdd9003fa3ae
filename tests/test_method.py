"""The paper's method end to end on the synthetic data, with every pseudo-label source."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ood_nolabels.methods import pseudo_label_finetune as method
from ood_nolabels.train import run

ROOT = Path(__file__).resolve().parents[1]
FAST = ("+experiment=ours_synthetic", "logger=none", "callbacks=none")


@pytest.mark.parametrize("source", ["scan", "kmeans", "ground_truth"])
def test_method_reports_averaged_and_per_epoch_metrics(compose_cfg, source, monkeypatch):
    seen = {}
    original = method.finetune_stage

    def spy(runtime, backbone, backbone_key, labels, *args, **kwargs):
        seen["labels"] = labels
        return original(runtime, backbone, backbone_key, labels, *args, **kwargs)

    monkeypatch.setattr(method, "finetune_stage", spy)
    cfg = compose_cfg(*FAST, f"pseudo_labels={source}")
    metrics = run(cfg)
    for prefix in ("ood", "ood_epoch0", "ood_epoch1", "ood_epoch_mean"):
        for scorer in ("knn", "mahalanobis"):
            assert 0 <= metrics[f"{prefix}/synthetic_4_5/{scorer}/auroc"] <= 1
    mean = (
        metrics["ood_epoch0/synthetic_4_5/knn/auroc"]
        + metrics["ood_epoch1/synthetic_4_5/knn/auroc"]
    ) / 2
    assert metrics["ood_epoch_mean/synthetic_4_5/knn/auroc"] == pytest.approx(mean)
    labels = seen["labels"]
    assert labels.shape == (64,) and int(labels.max()) < cfg.K
    if source == "ground_truth":
        assert torch.equal(labels, torch.arange(4).repeat_interleave(16))
    if source == "kmeans":
        assert "cluster/acc" in metrics and not any(k.startswith("cluster/scan") for k in metrics)


def test_ground_truth_needs_k_equal_to_the_number_of_classes(compose_cfg):
    with pytest.raises(ValueError, match="set K=4"):
        run(compose_cfg(*FAST, "pseudo_labels=ground_truth", "K=3"))


@pytest.mark.slow
def test_scorer_sweep_trains_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ood_nolabels.train",
            "-m",
            "+experiment=ours_synthetic",
            "scorer=knn,mahalanobis",
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
    stages = sorted(p.name.split("-")[0] for p in (tmp_path / "artifacts").iterdir())
    assert stages == ["finetune", "mining", "scan", "selflabel", "simclr"]
    for job, scorer in ((0, "knn"), (1, "mahalanobis")):
        metrics = json.loads((tmp_path / "sweep" / str(job) / "metrics.json").read_text())
        assert f"ood/synthetic_4_5/{scorer}/auroc" in metrics
