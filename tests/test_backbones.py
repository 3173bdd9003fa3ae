import time

import pytest
import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from timm.data import ImageNetInfo

from ood_nolabels.models import hub
from ood_nolabels.models.efficientnet_lite0 import (
    EfficientNetLite0Backbone,
    efficientnet_lite0_classifier,
    timm_key,
    timm_state_dict,
)
from ood_nolabels.models.open_clip_backbone import OpenClipBackbone
from ood_nolabels.models.timm_backbone import TimmBackbone


def test_lite0_mapping_covers_every_timm_key_with_matching_shapes():
    mapped = timm_state_dict()
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert set(mapped) == set(reference)
    for key, value in mapped.items():
        assert value.shape == reference[key].shape, key


def test_lite0_key_renaming_examples():
    assert timm_key("_blocks.0._depthwise_conv.weight") == "blocks.0.0.conv_dw.weight"
    assert timm_key("_blocks.1._expand_conv.weight") == "blocks.1.0.conv_pw.weight"
    assert timm_key("_blocks.3._project_conv.weight") == "blocks.2.0.conv_pwl.weight"
    assert timm_key("_blocks.15._bn2.running_var") == "blocks.6.0.bn3.running_var"
    assert timm_key("_fc.bias") == "classifier.bias"


@torch.no_grad()
def test_lite0_imagenet_predictions_on_real_photos():
    """The packaged weights classify scikit-learn's two sample photos sensibly."""
    model = efficientnet_lite0_classifier().eval()
    transform = EfficientNetLite0Backbone(image_size=224).transform()
    info = ImageNetInfo()
    china, flower = load_sample_images().images
    expected = {
        "china": {
            "palace",
            "monastery",
            "bell cote, bell cot",
            "castle",
            "church, church building",
            "pagoda, pagoda tree",
            "boathouse",
            "stupa, tope",
        },
        "flower": {"daisy", "bee", "pot, flowerpot", "vase", "hip, rose hip, rosehip"},
    }
    for name, image in (("china", china), ("flower", flower)):
        logits = model(transform(Image.fromarray(image))[None])
        top5 = {info.index_to_description(int(i)) for i in logits[0].topk(5).indices}
        assert top5 & expected[name], f"{name}: top-5 {top5}"


def test_lite0_backbone_features():
    backbone = EfficientNetLite0Backbone(image_size=64).eval()
    assert backbone.feature_dim == 1280
    x = backbone.transform()(Image.new("L", (8, 8), 128))
    assert x.shape == (3, 64, 64)
    assert backbone(x[None]).shape == (1, 1280)


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


def test_an_unknown_timm_model_is_named_with_similar_names():
    with pytest.raises(ValueError, match=r"'resnet_1522' is not a timm model.*'resnet"):
        TimmBackbone("resnet_1522", pretrained=False)
