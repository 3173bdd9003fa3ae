"""timm backbones: local checkpoints, clear errors, timm's own preprocessing."""

from __future__ import annotations

import pytest
import timm
import torch
from helpers import noise_image

from ood_nolabels.models.timm_backbone import TimmBackbone


def test_timm_backbone_from_local_checkpoint(tmp_path):
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    backbone = TimmBackbone("resnet18", pretrained=True, checkpoint_path=str(path), image_size=32)
    assert backbone.feature_dim == 512 and backbone.image_size == 32
    assert torch.equal(backbone.model.conv1.weight, source.conv1.weight)


def test_timm_backbone_missing_checkpoint_is_clear():
    with pytest.raises(FileNotFoundError, match="checkpoint_path"):
        TimmBackbone("resnet18", checkpoint_path="/nonexistent/weights.pth")


def test_an_unknown_timm_model_is_named_with_similar_names():
    with pytest.raises(ValueError, match=r"'resnet_1522' is not a timm model.*'resnet"):
        TimmBackbone("resnet_1522", pretrained=False)


def test_timm_backbone_preprocesses_like_timm():
    """timm's resolved data config: resize to size / crop_pct, centre crop (resnet18: 0.95)."""
    backbone = TimmBackbone("resnet18", pretrained=False)
    config = timm.data.resolve_model_data_config(backbone.model)
    assert backbone.crop_pct == config["crop_pct"] < 1
    reference = timm.data.create_transform(**config, is_training=False)
    image = noise_image(300, width=200)
    torch.testing.assert_close(backbone.transform()(image), reference(image))
