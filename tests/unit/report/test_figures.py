"""Diagnostic figures: each is written and each can be switched off."""

import numpy as np
import torch
from helpers import fake_result
from sklearn.neighbors import NearestNeighbors

from ood_nolabels.report.figures import nearest, write_diagnostics

ALL_FIGURES = {
    "roc_knn",
    "scores_knn",
    "epoch_auroc",
    "retrieval",
    "embedding",
    "confusion",
}


def test_nearest_matches_brute_force_cosine_neighbours():
    generator = torch.Generator().manual_seed(1)
    bank, queries = (
        torch.randn(300, 16, generator=generator),
        torch.randn(7, 16, generator=generator),
    )
    distances, indices = (
        NearestNeighbors(n_neighbors=4, metric="cosine").fit(bank).kneighbors(queries)
    )
    found_distances, found = nearest(queries, bank, 4)
    np.testing.assert_array_equal(found.numpy(), indices)
    np.testing.assert_allclose(found_distances.numpy(), distances, atol=1e-5)


def test_every_figure_is_written_and_each_can_be_switched_off(datamodule, tmp_path):
    settings = {name: True for name in ("roc", "histograms", "epochs", "retrieval")}
    settings |= {"embedding": True, "confusion": True, "max_points": 150}
    written = write_diagnostics(fake_result(datamodule), datamodule, settings, tmp_path / "all")
    assert set(written) == ALL_FIGURES
    assert all(path.stat().st_size > 1000 for path in written.values())  # real PNG images

    fewer = settings | {"embedding": False, "retrieval": False}
    written = write_diagnostics(fake_result(datamodule), datamodule, fewer, tmp_path / "fewer")
    assert set(written) == ALL_FIGURES - {"embedding", "retrieval"}
    assert sorted(p.name for p in (tmp_path / "fewer").iterdir()) == sorted(
        f"{name}.png" for name in written
    )


def test_figures_that_need_labels_or_epochs_are_skipped_without_them(datamodule, tmp_path):
    result = fake_result(datamodule, with_labels=False)
    result.metrics = {"ood/synthetic_4_5/knn/auroc": 0.9}  # DN2: no per-epoch models
    settings = {"epochs": True, "confusion": True, "roc": True}
    assert set(write_diagnostics(result, datamodule, settings, tmp_path)) == {"roc_knn"}
