"""The composed config printed as a tree (``print_config=true``), as lightning-hydra-template's
``print_config_tree``: the groups a run uses first, the method's wiring as written
(``backbone: ${backbone}``), every other branch with its resolved values."""

from __future__ import annotations

from collections.abc import Sequence

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

FIRST = ("method", "dataset", "ood", "backbone", "scorer", "pseudo_labels", "stage1", "finetune")


def config_tree(cfg: DictConfig, first: Sequence[str] = FIRST) -> rich.tree.Tree:
    """One branch per top-level key, ``first`` ones first, as YAML."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [key for key in first if key in cfg] + [key for key in cfg if key not in first]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        value = cfg[key]
        text = (
            OmegaConf.to_yaml(value, resolve=key != "method")
            if isinstance(value, DictConfig)
            else f"{value}\n"
        )
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
    return tree


def print_config_tree(cfg: DictConfig) -> None:
    rich.print(config_tree(cfg))
