"""open_clip backbones: the visual tower, a junk weights file, open_clip's own preprocessing."""

from __future__ import annotations

import pytest
import torch
from helpers import noise_image
from open_clip.transform import PreprocessCfg, image_transform_v2

from ood_nolabels.models.open_clip_backbone import OpenClipBackbone


def test_open_clip_visual_tower_without_weights():
    backbone = OpenClipBackbone("ViT-B-32", pretrained=None).eval()
    assert backbone.feature_dim == 512 and backbone.image_size == 224
    assert backbone.mean[0] == pytest.approx(0.4815, abs=1e-4)
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 224, 224)).shape == (1, 512)


def test_a_junk_open_clip_weights_file_names_the_file_key(tmp_path):
    junk = tmp_path / "weights.pt"
    junk.write_bytes(b"not a checkpoint" * 64)
    with pytest.raises(RuntimeError) as error:
        OpenClipBackbone("RN50", pretrained=str(junk))
    message = str(error.value)
    assert "could not load pretrained weights for open_clip RN50" in message
    assert "backbone.pretrained=/path/to/weights" in message
    assert "backbone.checkpoint_path" not in message  # the open_clip config has no such key


def test_open_clip_backbone_preprocesses_like_open_clip():
    backbone = OpenClipBackbone("ViT-B-32", pretrained=None)
    config = PreprocessCfg(**backbone.model.preprocess_cfg)
    reference = image_transform_v2(config, is_train=False)
    image = noise_image(200, width=320)
    torch.testing.assert_close(backbone.transform()(image), reference(image))
