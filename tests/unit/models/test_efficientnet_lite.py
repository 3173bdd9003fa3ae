"""EfficientNet-Lite0/1/2: the timm key mapping, the packaged weights on real photos, features."""

import pytest
import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from timm.data import ImageNetInfo

from ood_nolabels.models.efficientnet_lite import (
    EfficientNetLiteBackbone,
    efficientnet_lite_classifier,
    timm_key,
    timm_state_dict,
)

LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_mapping_covers_every_timm_key_with_matching_shapes(variant):
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    mapped = timm_state_dict(variant, model)
    reference = model.state_dict()
    assert set(mapped) == set(reference)
    for key, value in mapped.items():
        assert value.shape == reference[key].shape, key


def test_key_renaming_examples():
    assert timm_key("_blocks.0._depthwise_conv.weight", LITE0_STAGES) == "blocks.0.0.conv_dw.weight"
    assert timm_key("_blocks.1._expand_conv.weight", LITE0_STAGES) == "blocks.1.0.conv_pw.weight"
    assert timm_key("_blocks.3._project_conv.weight", LITE0_STAGES) == "blocks.2.0.conv_pwl.weight"
    assert timm_key("_blocks.15._bn2.running_var", LITE0_STAGES) == "blocks.6.0.bn3.running_var"
    assert timm_key("_fc.bias", LITE0_STAGES) == "classifier.bias"
    # Lite1 and Lite2 have 3, 3, 4, 4, 5 blocks in the middle stages: block 15 is in stage 5
    assert timm_key("_blocks.15._bn2.bias", (1, 3, 3, 4, 4, 5, 1)) == "blocks.5.0.bn3.bias"
    with pytest.raises(KeyError, match="beyond the 16 blocks"):
        timm_key("_blocks.16._bn2.bias", LITE0_STAGES)


@pytest.mark.parametrize("variant", [0, 2])
@torch.no_grad()
def test_imagenet_predictions_on_real_photos(variant):
    """The packaged weights classify scikit-learn's two sample photos sensibly."""
    model = efficientnet_lite_classifier(variant).eval()
    transform = EfficientNetLiteBackbone(variant, image_size=224).transform()
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
        assert top5 & expected[name], f"lite{variant} {name}: top-5 {top5}"


def test_backbone_features():
    backbone = EfficientNetLiteBackbone(image_size=64).eval()
    assert backbone.feature_dim == 1280
    x = backbone.transform()(Image.new("L", (8, 8), 128))
    assert x.shape == (3, 64, 64)
    assert backbone(x[None]).shape == (1, 1280)


def test_unknown_variant_is_refused_by_name():
    with pytest.raises(ValueError, match=r"variant 3: the offline weights exist for \(0, 1, 2\)"):
        EfficientNetLiteBackbone(variant=3)
