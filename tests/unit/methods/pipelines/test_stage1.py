"""The stage-1 recipe checks, and the choice between SCAN's and self-labelling's clusters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ood_nolabels.core.neighbors import mine_neighbors, neighbor_modularity
from ood_nolabels.methods.pipelines.stage1 import better_clustering, check_recipe

FAST = ("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")


def test_on_features_needs_a_pretrained_pretext(compose_cfg):
    cfg = compose_cfg(*FAST, "+stage1.on_features=true")
    with pytest.raises(ValueError, match="needs a pretrained stage1.pretext"):
        check_recipe(cfg.stage1)


def four_clusters() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(10 * np.eye(4)[c], 1, (30, 4)) for c in range(4)])
    return mine_neighbors(torch.as_tensor(points), 5), torch.arange(4).repeat_interleave(30)


def test_self_labelling_that_merged_clusters_is_undone_only_when_asked():
    neighbors, truth = four_clusters()
    merged = torch.where(truth == 3, 2, truth)  # a confident cluster swallowed another
    kept, metrics = better_clustering(truth, merged, neighbors, guard=True)
    assert torch.equal(kept, truth) and metrics["cluster/selflabel/kept_scan"] == 1.0
    assert metrics["cluster/scan/modularity"] == neighbor_modularity(neighbors, truth)
    assert metrics["cluster/selflabel/modularity"] < metrics["cluster/scan/modularity"]
    kept, metrics = better_clustering(truth, merged, neighbors, guard=False)
    assert torch.equal(kept, merged) and metrics["cluster/selflabel/kept_scan"] == 0.0


def test_self_labelling_that_fixed_clusters_is_kept():
    neighbors, truth = four_clusters()
    noisy = truth.clone()
    noisy[::7] = (noisy[::7] + 1) % 4  # SCAN's clusters with every 7th image misplaced
    kept, metrics = better_clustering(noisy, truth, neighbors, guard=True)
    assert torch.equal(kept, truth) and metrics["cluster/selflabel/kept_scan"] == 0.0
