"""Cached stages in real runs: a damaged stage file retrains; the metrics never depend on what
was cached.
"""

import os
from pathlib import Path

import pytest

from ood_nolabels.engine.artifacts import load_artifact
from ood_nolabels.train import run

FAST = ("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")


def test_a_truncated_stage_file_in_a_real_run_is_retrained(compose_cfg, caplog):
    cfg = compose_cfg(*FAST, "method=stage1_only", "stage1.stop_after=pretext")
    first = run(cfg)
    (simclr_dir,) = Path(cfg.paths.artifact_dir).glob("simclr-*[0-9a-f]")
    weights = simclr_dir / "simclr.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    with caplog.at_level("WARNING"):
        assert run(cfg) == first
    assert any("unreadable" in m and simclr_dir.name in m for m in caplog.messages)
    assert load_artifact(weights)  # a complete file again


@pytest.mark.slow  # a whole method run, several times over
def test_same_metrics_whatever_is_cached(compose_cfg):
    """Stage results depend on their config only, not on which stages were cached before."""
    fast = ("+experiment=ours_synthetic", "logger=none", "callbacks=none")
    cfg = compose_cfg(*fast)
    artifacts = Path(cfg.paths.artifact_dir)
    fresh = run(cfg)
    for stage in ("finetune", "selflabel", "scan"):  # reuse fewer and fewer stages
        for path in artifacts.glob(f"{stage}-*"):
            os.rename(path, tmp := path.with_name(f"old-{path.name}"))
            assert tmp.exists()
        assert run(compose_cfg(*fast)) == fresh, stage
