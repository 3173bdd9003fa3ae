"""EfficientNet-Lite0: the timm key mapping, the packaged weights on real photos, features."""

import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from timm.data import ImageNetInfo

from ood_nolabels.models.efficientnet_lite0 import (
    EfficientNetLite0Backbone,
    efficientnet_lite0_classifier,
    timm_key,
    timm_state_dict,
)


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
