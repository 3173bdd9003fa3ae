"""The paper's method end to end on the synthetic data, with every pseudo-label source and
K=auto.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import auroc_from_scores
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ood_nolabels.core.eigengap import eigengap_k
from ood_nolabels.core.feature_drift import SIGNALS
from ood_nolabels.core.neighbors import mine_neighbors
from ood_nolabels.data.splits import NORMAL_TRAIN
from ood_nolabels.engine.artifacts import load_artifact
from ood_nolabels.methods import finetune as method
from ood_nolabels.train import build_runtime, run

FAST = ("+experiment=ours_synthetic", "logger=none", "callbacks=none")


@pytest.mark.slow  # a whole method run, several times over
@pytest.mark.parametrize("source", ["stage1", "kmeans", "ground_truth"])
def test_method_reports_averaged_and_per_epoch_metrics(compose_cfg, source, monkeypatch):
    seen = {}
    original = method.finetune_stage

    def spy(runtime, backbone, backbone_key, labels, *args, **kwargs):
        seen["labels"] = labels
        return original(runtime, backbone, backbone_key, labels, *args, **kwargs)

    monkeypatch.setattr(method, "finetune_stage", spy)
    cfg = compose_cfg(*FAST, f"pseudo_labels={source}")
    metrics = run(cfg)
    for scorer in ("knn", "mahalanobis"):  # the averaged model's, against scikit-learn
        expected = auroc_from_scores(Path(cfg.paths.output_dir), "synthetic_4_5", scorer)
        assert metrics[f"ood/synthetic_4_5/{scorer}/auroc"] == pytest.approx(expected, abs=1e-6)
        assert {f"ood_epoch{e}/synthetic_4_5/{scorer}/auroc" for e in (0, 1)} <= metrics.keys()
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


@pytest.mark.slow  # a whole method run, several times over
def test_replayed_epochs_leave_the_averaged_model_alone(compose_cfg, monkeypatch):
    """A reused finetune stage scores its epochs from their files, on a copy of the model: the
    model the detector is built from keeps the averaged weights."""
    run(compose_cfg(*FAST))  # trains; every epoch is scored live
    seen = {}
    original = method.build_detector

    def spy(backbone, *args, **kwargs):
        seen["weights"] = {k: v.clone() for k, v in backbone.state_dict().items()}
        return original(backbone, *args, **kwargs)

    monkeypatch.setattr(method, "build_detector", spy)
    cfg = compose_cfg(*FAST)
    metrics = run(cfg)  # finetune reused: its 2 epochs are replayed from their saved weights
    assert "ood_epoch1/synthetic_4_5/knn/auroc" in metrics
    finetune = next(p for p in Path(cfg.paths.artifact_dir).glob("finetune-*") if p.is_dir())
    averaged = load_artifact(finetune / "averaged.pt")
    assert seen["weights"].keys() == averaged.keys()
    assert all(torch.equal(seen["weights"][name], averaged[name]) for name in averaged)


@pytest.mark.slow  # a whole method run, several times over
def test_k_auto_with_kmeans_chooses_on_its_own_features_and_trains_no_stage_1(compose_cfg):
    cfg = compose_cfg(*FAST, "pseudo_labels=kmeans", "K=auto", "pseudo_labels.auto_k.k_max=8")
    metrics = run(cfg)
    stages = {p.name.split("-")[0] for p in Path(cfg.paths.artifact_dir).iterdir() if p.is_dir()}
    assert stages == {"finetune"}  # no SimCLR, no mining: k-means needs neither
    runtime = build_runtime(cfg)
    backbone = instantiate(cfg.backbone)
    loaders = {NORMAL_TRAIN: runtime.datamodule.loader(NORMAL_TRAIN, backbone.transform())}
    features = runtime.extract(backbone, loaders)[NORMAL_TRAIN]
    expected = eigengap_k(mine_neighbors(features, 20), 2, 8).k
    assert metrics["auto_k/K"] == expected and cfg.K == expected


@pytest.mark.slow
def test_k_auto_flows_through_the_whole_method(compose_cfg):
    """``K=auto`` on the synthetic method: the curve is written and logged, the chosen K is the
    eigengap's on the mined neighbours, SCAN trains that many clusters and scoring follows."""
    cfg = compose_cfg(
        "+experiment=ours_synthetic",
        "logger=csv",
        "callbacks=none",
        "stage1=frozen_features",
        "K=auto",
        "pseudo_labels.auto_k.k_max=6",
        "stage1.mining.num_neighbors=5",
        "stage1.collapse.max_cluster_share=1.0",
        "stage1.collapse.max_empty_fraction=1.0",
        "stage1.selflabel.module.threshold=0.3",
        "stage1.scan.epochs=3",
        "stage1.selflabel.epochs=2",
        "finetune.epochs=3",  # a third epoch: two may not beat the majority pseudo-class
        "plots.auto_k=true",  # any plots override keeps the other figures: two slow ones off
        "plots.embedding=false",
        "plots.retrieval=false",
    )
    metrics = run(cfg)
    output = Path(cfg.paths.output_dir)
    mining = next(Path(cfg.paths.artifact_dir).glob("mining-*[!k]"))
    expected = eigengap_k(load_artifact(mining / "neighbors.pt"), 2, 6).k
    assert metrics["auto_k/K"] == expected and cfg.K == expected
    assert (output / "plots" / "auto_k.png").stat().st_size > 1000
    assert OmegaConf.load(output / "config_resolved.yaml").K == expected
    scan = next(Path(cfg.paths.artifact_dir).glob("scan-*[!k]"))
    assert load_artifact(scan / "scan.pt")["heads.0.weight"].shape[0] == expected
    assert any(key.startswith("ood/") for key in metrics)


@pytest.mark.parametrize("minimum, warned", [(1.01, True), (0.0, False)])
def test_feature_drift_is_measured_for_every_model_and_the_guard_warns(
    compose_cfg, capsys, minimum, warned
):
    guard = f"method.drift_guard={{signal: linear_cka, minimum: {minimum}}}"
    metrics = run(compose_cfg(*FAST, "pseudo_labels=ground_truth", guard))
    for scope in ("drift", "drift_epoch0", "drift_epoch1"):
        for signal in SIGNALS:
            assert 0.0 < metrics[f"{scope}/{signal}"] <= 1.0 + 1e-6
    assert metrics["drift_epoch0/linear_cka"] != metrics["drift/linear_cka"]
    printed = capsys.readouterr().out
    assert "drift: linear_cka" in printed  # a row of the per-epoch table
    assert ("WARNING: the weight-averaged model's features drifted" in printed) == warned


def test_an_unknown_drift_signal_is_refused(compose_cfg):
    # Hydra wraps the method's ValueError; its message stays readable
    with pytest.raises(Exception, match="unknown drift signal 'rank'; expected one of"):
        run(
            compose_cfg(
                *FAST,
                "pseudo_labels=ground_truth",
                "method.drift_guard={signal: rank, minimum: 1}",
            )
        )
