"""Make W&B run offline instead of prompting for a key on a machine without credentials."""

from __future__ import annotations

import netrc
import os

WANDB_HOST = "api.wandb.ai"


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def use_offline_wandb_without_credentials() -> str:
    """Set ``WANDB_MODE=offline`` unless a mode is set or credentials exist; return the mode."""
    if "WANDB_MODE" not in os.environ and not has_wandb_credentials():
        os.environ["WANDB_MODE"] = "offline"
    return os.environ.get("WANDB_MODE", "online")
