"""``stage1=frozen_features``: the features of a pretrained backbone extracted once, heads-only
SCAN and self-label trained on them, reused by later runs; the frozen-features benchmark.
"""

from __future__ import annotations

import logging
import runpy
from pathlib import Path

import pytest
import torch
from helpers import conv_backbone
from omegaconf import OmegaConf, open_dict

from ood_nolabels.core.neighbors import mine_neighbors
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.engine.artifacts import load_artifact
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.pipelines.stage1 import cluster_normal_images
from ood_nolabels.train import build_runtime

FAST = ("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")
# A deterministic pretrained stand-in (seeded init, BatchNorm statistics that a training-mode
# forward would move).
PRETEXT = {"_target_": "helpers.conv_backbone", "image_size": 16, "batchnorm": True}


def frozen_features_cfg(compose_cfg, *overrides: str):
    cfg = compose_cfg(*FAST, "stage1=frozen_features", *overrides)
    with open_dict(cfg):
        cfg.stage1.pretext = OmegaConf.create(PRETEXT)
        cfg.stage1.mining.num_neighbors = 5
        cfg.stage1.scan.epochs = 3
        cfg.stage1.selflabel.epochs = 2
        cfg.stage1.selflabel.module.threshold = 0.2  # caching is the point: every sample counts
        cfg.stage1.collapse.max_cluster_share = 1.0
        cfg.stage1.collapse.max_empty_fraction = 1.0
    return cfg


def test_frozen_features_trains_heads_on_features_extracted_once(compose_cfg, caplog):
    caplog.set_level(logging.INFO, logger="ood_nolabels.methods.pipelines.stage1")
    cfg = frozen_features_cfg(compose_cfg)
    result = cluster_normal_images(build_runtime(cfg), cfg.stage1, cfg.K)
    stages = {stage.stage: stage for stage in result.stages}
    assert list(stages) == ["features", "mining", "scan", "selflabel"]
    assert all(stage.outcome == "trained" for stage in stages.values())
    # The returned backbone is the pretext, unchanged: bit-identical to a fresh one, and its
    # features are exactly the cached ones.
    fresh = conv_backbone(image_size=16, batchnorm=True)
    for name, value in fresh.state_dict().items():
        assert torch.equal(result.backbone.state_dict()[name], value), name
    cached = load_artifact(stages["features"].directory / "features.pt")
    runtime = build_runtime(cfg)
    loader = {NORMAL_TRAIN: runtime.datamodule.loader(NORMAL_TRAIN, fresh.transform())}
    assert torch.equal(runtime.extract(fresh, loader)[NORMAL_TRAIN], cached)
    # Neighbours mined in that space, as an independent search finds them.
    mined = load_artifact(stages["mining"].directory / "neighbors.pt")
    assert torch.equal(mined, mine_neighbors(cached, 5, use_faiss=False, include_self=True))
    assert result.pseudo_labels.shape == (len(cached),)
    assert "stage 1 (features -> mining -> scan -> selflabel)" in caplog.text


def test_cached_features_are_reused_by_a_second_run_and_another_k(compose_cfg, monkeypatch):
    cfg = frozen_features_cfg(compose_cfg)
    cluster_normal_images(build_runtime(cfg), cfg.stage1, cfg.K)

    def no_extraction(*args, **kwargs):
        raise AssertionError("a second run ran a model over the data")

    with monkeypatch.context() as patch:
        patch.setattr(Runtime, "extract", no_extraction)
        again = cluster_normal_images(build_runtime(cfg), cfg.stage1, cfg.K)
    assert [s.outcome for s in again.stages] == ["reused"] * 4
    other_k = cluster_normal_images(build_runtime(cfg), cfg.stage1, cfg.K + 1)
    assert [s.outcome for s in other_k.stages] == ["reused", "reused", "trained", "trained"]


@pytest.mark.slow
def test_frozen_features_benchmark_runs_on_cpu_with_tiny_sizes(monkeypatch, capsys):
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "frozen_features.py"
    argv = [str(script), "--backbone", "efficientnet_lite0", "--images", "48"]
    monkeypatch.setattr("sys.argv", [*argv, "--image-size", "32", "--device", "cpu"])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "features (48, 1280)" in out and "projected stage 1 (full recipe)" in out
