"""MoCo v2 weights: the query encoder from a local file; clear errors offline or on other files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet50

from ood_nolabels.models import moco


def fake_moco_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    encoder = resnet50(weights=None)
    state = {f"module.encoder_q.{k}": v for k, v in encoder.state_dict().items() if "fc" not in k}
    state |= {
        "module.encoder_q.fc.0.weight": torch.randn(2048, 2048),
        "module.encoder_q.fc.0.bias": torch.randn(2048),
        "module.encoder_q.fc.2.weight": torch.randn(128, 2048),
        "module.encoder_q.fc.2.bias": torch.randn(128),
        "module.encoder_k.conv1.weight": torch.randn(64, 3, 7, 7),  # the key encoder: ignored
    }
    torch.save({"state_dict": state, "epoch": 800}, path)
    return state


@pytest.mark.slow
def test_moco_backbone_loads_the_query_encoder_from_a_local_file(tmp_path):
    path = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    state = fake_moco_checkpoint(path)
    backbone = moco.MocoV2ResNet50Backbone(checkpoint_path=str(path))
    loaded = backbone.model.state_dict()
    for name, value in loaded.items():
        assert torch.equal(value, state[f"module.encoder_q.{name}"]), name
    assert backbone.feature_dim == 2048 and backbone.crop_pct == 224 / 256
    assert backbone.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 2048)


def test_moco_offline_without_the_file_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(moco, "hub_reachable", lambda: False)
    monkeypatch.setattr(moco, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(
        FileNotFoundError, match=r"moco_v2_800ep_pretrain\.pth\.tar.*checkpoint_path"
    ):
        moco.MocoV2ResNet50Backbone()


def test_not_a_moco_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="not a MoCo checkpoint"):
        moco.MocoV2ResNet50Backbone(checkpoint_path=str(path))
