"""The visual tower of an open_clip model (CLIP) as a backbone, with open_clip's preprocessing."""

from __future__ import annotations

import open_clip
from torch import nn

from ood_nolabels.models.backbones import Backbone, library_resize_mode
from ood_nolabels.models.hub import load_pretrained


class OpenClipBackbone(Backbone):
    """The visual tower of an open_clip model; ``pretrained`` is a tag or a local weights file.

    Evaluation preprocessing as open_clip's own (``preprocess_cfg``): resize the shorter side to
    ``image_size`` and crop the centre.
    """

    def __init__(self, name: str, pretrained: str | None = "openai", image_size: int | None = None):
        def create() -> nn.Module:
            return open_clip.create_model(name, pretrained=pretrained)

        model = (
            load_pretrained(f"open_clip {name}/{pretrained}", create, "backbone.pretrained")
            if pretrained
            else create()
        )
        visual = model.visual
        config = visual.preprocess_cfg
        size = config["size"]
        super().__init__(
            visual,
            feature_dim=visual.output_dim,
            image_size=image_size or (size if isinstance(size, int) else size[-1]),
            mean=config["mean"],
            std=config["std"],
            interpolation=config.get("interpolation", "bicubic"),
            resize_mode=library_resize_mode(config.get("resize_mode"), name),
        )
