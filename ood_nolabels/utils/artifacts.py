"""Stage artifacts addressed by the config they depend on, so unchanged stages are reused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf


def config_digest(*parts: Any) -> str:
    """A short stable hash of resolved config parts (DictConfigs, strings, numbers)."""

    def plain(part: Any) -> Any:
        if isinstance(part, DictConfig | ListConfig):
            return OmegaConf.to_container(part, resolve=True)
        return part

    payload = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def stage_dir(root: Path, stage: str, *depends_on: Any) -> Path:
    """``root/<stage>-<hash>``: the same upstream config always maps to the same directory."""
    path = Path(root) / f"{stage}-{config_digest(stage, *depends_on)}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@rank_zero_only
def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
