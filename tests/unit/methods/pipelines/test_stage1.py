"""The stage-1 recipe checks."""

from __future__ import annotations

import pytest

from ood_nolabels.methods.pipelines.stage1 import check_recipe

FAST = ("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")


def test_on_features_needs_a_pretrained_pretext(compose_cfg):
    cfg = compose_cfg(*FAST, "+stage1.on_features=true")
    with pytest.raises(ValueError, match="needs a pretrained stage1.pretext"):
        check_recipe(cfg.stage1)
