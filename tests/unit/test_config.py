"""Composing the config from Python, without the Hydra command line."""

import os
from pathlib import Path

from omegaconf import OmegaConf

from ood_nolabels.config import compose


def test_compose_gives_a_runnable_config_without_the_hydra_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose("+experiment=dn2_synthetic", "seed=3")
    assert "hydra" not in cfg and cfg.seed == 3
    resolved = OmegaConf.to_container(cfg, resolve=True)  # "HydraConfig was not set" before
    assert resolved["paths"]["root_dir"] == str(tmp_path)
    run_dir = Path(resolved["paths"]["output_dir"])
    assert run_dir.parent == tmp_path / "outputs" / "dn2_synthetic"
    assert resolved["paths"]["artifact_dir"] in (
        os.environ.get("OOD_ARTIFACT_DIR"),
        str(tmp_path / "artifacts"),
    )
    assert compose(output_dir=tmp_path / "x").paths.output_dir == str(tmp_path / "x")
