"""MoCo v2 ResNet-50 (800 epochs on ImageNet): the pretext backbone of SCAN's ImageNet recipe.

The official SCAN code (``moco.py`` of wvangansbeke/Unsupervised-Classification) downloads
``moco_v2_800ep_pretrain.pth.tar`` from the MoCo release, keeps the query encoder
(``module.encoder_q.*``) as the backbone and mines neighbours on its 2048-d pooled features
(the MLP head replaced by the identity). Preprocessing as its ImageNet dataset: resize the shorter
side to 256 (bilinear), crop the centre 224, ImageNet statistics.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.hub import get_dir, load_state_dict_from_url
from torchvision.models import resnet50

from ood_nolabels.models.backbones import Backbone
from ood_nolabels.models.hub import hub_reachable

MOCO_V2_URL = (
    "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/"
    "moco_v2_800ep_pretrain.pth.tar"
)
QUERY_ENCODER = "module.encoder_q."
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def moco_backbone_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The query encoder's weights without its MLP head (``fc.*``), named as torchvision's.

    Refuses a file that is not a MoCo checkpoint (no ``state_dict`` with ``module.encoder_q.``).
    """
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not state or not any(key.startswith(QUERY_ENCODER) for key in state):
        raise ValueError(
            "not a MoCo checkpoint: expected a dict with 'state_dict' holding "
            f"'{QUERY_ENCODER}*' weights (the file {MOCO_V2_URL.rsplit('/', 1)[-1]})"
        )
    return {
        key[len(QUERY_ENCODER) :]: value
        for key, value in state.items()
        if key.startswith(QUERY_ENCODER) and not key.startswith(f"{QUERY_ENCODER}fc.")
    }


def load_moco_checkpoint(checkpoint_path: str | None, url: str = MOCO_V2_URL) -> dict:
    """The checkpoint from ``checkpoint_path``, else from torch's hub cache or ``url``."""
    if checkpoint_path:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"backbone.checkpoint_path {path} does not exist")
        return torch.load(path, map_location="cpu", weights_only=False)
    file_name = url.rsplit("/", 1)[-1]
    cached = Path(get_dir()) / "checkpoints" / file_name
    if not cached.is_file() and not hub_reachable():
        raise FileNotFoundError(
            f"MoCo v2 weights not found and no internet: expected the file {file_name} (from "
            f"{url}) at {cached}, or pass it with backbone.checkpoint_path=/path/to/{file_name}"
        )
    return load_state_dict_from_url(url, map_location="cpu", file_name=file_name)


class MocoV2ResNet50Backbone(Backbone):
    """torchvision ResNet-50 with the MoCo v2 query encoder's weights (loaded strictly), 2048-d."""

    def __init__(
        self, checkpoint_path: str | None = None, url: str = MOCO_V2_URL, image_size: int = 224
    ) -> None:
        model = resnet50(weights=None)
        model.fc = nn.Identity()
        model.load_state_dict(moco_backbone_state(load_moco_checkpoint(checkpoint_path, url)))
        super().__init__(
            model,
            feature_dim=2048,
            image_size=image_size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            interpolation="bilinear",
            crop_pct=image_size / 256,
        )
