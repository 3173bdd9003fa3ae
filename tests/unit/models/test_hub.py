"""Pretrained weights with the hub unreachable: fail fast, and offline from then on."""

import time

import pytest

from ood_nolabels.models import hub
from ood_nolabels.models.timm_backbone import TimmBackbone


def test_hub_weights_offline_fail_fast(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(hub.huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub.huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # empty cache
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="could not load pretrained weights.*unreachable"):
        TimmBackbone("resnet18", pretrained=True)
    assert time.monotonic() - start < 20
    assert hub.huggingface_hub.constants.HF_HUB_OFFLINE is True
