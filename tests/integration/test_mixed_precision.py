"""bf16-mixed on the CPU through the whole method: what a GPU run would do, in miniature.

Checks the dtype contract rather than speed (bf16 autocast is slow on CPUs without AMX): the
losses come out in float32, features reach the scorers (faiss, Mahalanobis) as float32, and the
metrics are finite.
"""

from __future__ import annotations

import math

import pytest
import torch

from ood_nolabels.modules import finetune as finetune_module
from ood_nolabels.modules import scan as scan_module
from ood_nolabels.modules import simclr as simclr_module
from ood_nolabels.scorers.knn import KNNScorer
from ood_nolabels.scorers.mahalanobis import MahalanobisScorer
from ood_nolabels.train import run


def spy(monkeypatch, owner, name: str, seen: list, pick=lambda result: result) -> None:
    """Record the dtype of what ``owner.name`` returns (through ``pick``)."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        seen.append(pick(result).dtype)
        return result

    monkeypatch.setattr(owner, name, wrapper)


@pytest.mark.slow  # a whole method run under bf16 autocast on the CPU
def test_bf16_mixed_runs_the_method_with_float32_losses_and_features(compose_cfg, monkeypatch):
    seen: dict[str, list] = {"nt_xent": [], "scan": [], "features": [], "autocast": []}
    spy(monkeypatch, simclr_module, "nt_xent", seen["nt_xent"])
    spy(monkeypatch, scan_module, "scan_loss", seen["scan"], pick=lambda r: r[0])
    for scorer in (KNNScorer, MahalanobisScorer):
        original = scorer.fit

        def fit(self, features, labels=None, original=original):
            seen["features"].append(features.dtype)
            return original(self, features, labels)

        monkeypatch.setattr(scorer, "fit", fit)
    original_step = finetune_module.FinetuneModule.training_step

    def step(self, *args, **kwargs):
        seen["autocast"].append(torch.is_autocast_cpu_enabled())
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(finetune_module.FinetuneModule, "training_step", step)
    metrics = run(
        compose_cfg(
            "+experiment=ours_synthetic",
            "+debug=tiny",
            "logger=none",
            "callbacks=none",
            "trainer.precision=bf16-mixed",
            "scorer=all",
        )
    )
    assert seen["autocast"] and all(seen["autocast"])  # the finetune really ran under bf16
    assert seen["nt_xent"] and set(seen["nt_xent"]) == {torch.float32}
    assert seen["scan"] and set(seen["scan"]) == {torch.float32}
    assert seen["features"] and set(seen["features"]) == {torch.float32}
    aurocs = [v for k, v in metrics.items() if k.startswith("ood/") and k.endswith("/auroc")]
    assert len(aurocs) == 2 and all(math.isfinite(v) for v in aurocs)
