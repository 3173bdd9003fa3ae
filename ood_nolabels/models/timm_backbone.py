"""Any timm model as a backbone, with timm's own preprocessing."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
from torch import nn

from ood_nolabels.models.backbones import Backbone, library_resize_mode
from ood_nolabels.models.hub import load_pretrained


class TimmBackbone(Backbone):
    """Any timm model by name, without its classifier.

    ``pretrained=True`` loads the hub weights (or the local file ``checkpoint_path``);
    ``image_size`` overrides the model's default input size (e.g. 64 px for tiny images).
    Evaluation preprocessing follows timm's resolved data config (``crop_pct``, ``crop_mode``,
    interpolation, statistics); ``crop_pct`` overrides its crop fraction.
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = True,
        checkpoint_path: str | None = None,
        image_size: int | None = None,
        crop_pct: float | None = None,
        **model_kwargs,
    ) -> None:
        def create() -> nn.Module:
            overlay = {"file": str(Path(checkpoint_path).expanduser())} if checkpoint_path else None
            return timm.create_model(
                name,
                pretrained=pretrained or bool(checkpoint_path),
                pretrained_cfg_overlay=overlay,
                num_classes=0,
                **model_kwargs,
            )

        if not timm.is_model(name):
            similar = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=6)
            raise ValueError(
                f"backbone.name={name!r} is not a timm model. Similar names: {similar} "
                "(timm.list_models('*pattern*') lists them all)"
            )
        if checkpoint_path and not Path(checkpoint_path).expanduser().is_file():
            raise FileNotFoundError(f"backbone.checkpoint_path {checkpoint_path} does not exist")
        if pretrained and not checkpoint_path:
            model = load_pretrained(f"timm model {name!r}", create, "backbone.checkpoint_path")
        else:
            model = create()
        config = timm.data.resolve_model_data_config(model)
        super().__init__(
            model,
            feature_dim=model.num_features,
            image_size=image_size or config["input_size"][-1],
            mean=config["mean"],
            std=config["std"],
            interpolation=config.get("interpolation", "bicubic"),
            crop_pct=crop_pct or config.get("crop_pct") or 1.0,
            resize_mode=library_resize_mode(config.get("crop_mode"), name),
        )
