"""The run-wide values of ``train.yaml`` and their types, checked before anything else runs:
``seed=abc`` fails at once, naming the value, instead of after the stages trained."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError


@dataclass
class RunSettings:
    seed: int = 0
    task_name: str = "train"
    tags: list[str] = field(default_factory=list)
    verbose: bool = False
    print_config: bool = False
    optimized_metric: str | None = None


@dataclass
class DataSettings:
    batch_size: int = 64
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    check_images: bool = True


def check_settings(cfg: DictConfig) -> None:
    """Each run-wide value (and ``data.*``) has its type, and the counts are in range, or a
    ``ValueError`` names the value, what it should be, and the default."""
    checks = [(RunSettings, cfg, ""), (DataSettings, cfg.get("data") or {}, "data.")]
    for schema, node, prefix in checks:
        values = {f.name: node[f.name] for f in fields(schema) if f.name in node}
        try:
            OmegaConf.merge(OmegaConf.structured(schema), values)
        except ValidationError as error:
            name = str(error.full_key)
            expected = {f.name: f.type for f in fields(schema)}.get(name, "?")
            default = getattr(schema(), name, None)
            raise ValueError(
                f"{prefix}{name}={node[name]!r}: expected {expected} (the default is "
                f"{prefix}{name}={default!r})"
            ) from error
    data = cfg.get("data") or {}
    for name, least in (("batch_size", 1), ("num_workers", 0)):
        if name in data and data[name] < least:
            raise ValueError(f"data.{name}={data[name]}: use {least} or more")
