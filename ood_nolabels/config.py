"""Running a configured experiment from Python (a notebook) without the Hydra command line.

``compose`` builds the config ``python -m ood_nolabels.train <overrides>`` would run, with the
paths the command line takes from Hydra's runtime filled in::

    from ood_nolabels.config import compose
    from ood_nolabels.train import run

    cfg = compose("+experiment=digits", "logger=csv", output_dir="runs/digits")
    metrics = run(cfg)    # runs/digits/{metrics.json, scores.csv, detector.pt, ...}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

CONFIG_DIR = Path(__file__).resolve().parent / "conf"


def compose(
    *overrides: str, output_dir: str | Path | None = None, root_dir: str | Path | None = None
) -> DictConfig:
    """The run config for ``overrides`` (as on the command line).

    ``output_dir`` defaults to the directory the command line would use (``outputs/<task>/<time>``
    under ``root_dir``); ``root_dir`` (default: the current directory) is where ``data/`` and
    ``artifacts/`` are looked for unless ``OOD_DATA_DIR`` / ``OOD_ARTIFACT_DIR`` say otherwise.
    """
    root = Path(root_dir or os.getcwd()).resolve()
    overrides: Sequence[str] = list(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra_compose("train", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    run_dir = Path(OmegaConf.select(cfg, "hydra.run.dir"))
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.root_dir = str(root)
        cfg.paths.output_dir = str(Path(output_dir or root / run_dir).resolve())
    return cfg
