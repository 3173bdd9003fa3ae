"""Objects from the ``_target_`` configs a detector file stores, without Hydra.

A saved detector names its backbone and scorers as flat configs (``_target_`` plus keyword
arguments, as the run's Hydra config had them); rebuilding them needs only an import and a call,
so scoring never loads the training stack.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


def locate(path: str) -> Any:
    """The object at a dotted ``module.attribute`` path."""
    module_name, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(
            f"{path!r} names nothing importable: the detector was written by another version "
            "of ood-nolabels; score it with the release that wrote it"
        ) from error


def build(config: Mapping[str, Any]) -> Any:
    """``_target_(**kwargs)`` for a flat config (the keys other than Hydra's ``_..._`` ones)."""
    if "_target_" not in config:
        raise ValueError(f"a saved config without _target_: {sorted(config)}")
    nested = [
        key for key, value in config.items() if isinstance(value, Mapping) and "_target_" in value
    ]
    if nested:
        raise ValueError(f"saved configs are flat; {nested} would need building first")
    kwargs = {key: value for key, value in config.items() if not key.startswith("_")}
    return locate(config["_target_"])(**kwargs)
