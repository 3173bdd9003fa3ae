"""Shared fixtures: composing the real Hydra config the way the CLI does, and what the tests build
from it (the synthetic data module, the ``scan_cifar10`` recipe).

Plain helpers (a quiet trainer, tiny backbones, data writers) are in tests/helpers.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from ood_nolabels.config import CONFIG_DIR

os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``train.yaml`` with overrides; outputs go to ``tmp_path``.

    The diagnostic figures are switched off unless an override mentions ``plots``: the tests of
    other behaviour do not need them, and tests/unit/report/test_figures.py covers them.
    """

    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=False)
        with open_dict(cfg):
            cfg.paths.root_dir = str(tmp_path)
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.artifact_dir = str(tmp_path / "artifacts")
            if not any(o.lstrip("+~").startswith("plots") for o in overrides):
                for name, value in cfg.plots.items():
                    cfg.plots[name] = False if isinstance(value, bool) else value
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def datamodule(compose_cfg):
    """The synthetic data of ``dn2_synthetic``, set up."""
    module = instantiate(compose_cfg("+experiment=dn2_synthetic").data)
    module.setup()
    return module


@pytest.fixture
def scan_cifar10(compose_cfg):
    """The ``scan_cifar10`` recipe and its backbone's input statistics."""
    cfg = compose_cfg("+experiment=stage1_cifar10").stage1
    backbone = instantiate(cfg.simclr.backbone)
    stats = dict(image_size=backbone.image_size, mean=backbone.mean, std=backbone.std)
    return cfg, backbone, stats
