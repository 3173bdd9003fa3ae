"""The entry point's ``run`` in-process on the synthetic data: metrics vs an independent
computation, clear errors, figures and timings, W&B offline.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from sklearn.metrics import roc_auc_score

from ood_nolabels.train import run


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


@pytest.mark.slow
def test_a_run_writes_its_figures_and_timings(compose_cfg, capsys):
    cfg = compose_cfg(
        "+experiment=dn2_synthetic",
        "logger=none",
        "callbacks=none",
        "plots.embedding=false",
    )
    run(cfg)
    plots = Path(cfg.paths.output_dir) / "plots"
    names = {p.stem for p in plots.iterdir()}
    assert names == {"roc_knn", "roc_mahalanobis", "scores_knn", "scores_mahalanobis", "retrieval"}
    out = capsys.readouterr().out
    assert "scoring: final model" in out and "| total" in out
