"""Diagnostic figures, the per-image scores file, the console, and the optimized metric."""

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from ood_nolabels.core.ood_metrics import roc_points
from ood_nolabels.core.timings import Timings
from ood_nolabels.data.datamodule import NORMAL_TEST, NORMAL_TRAIN
from ood_nolabels.engine.console import StageProgressBar, quiet_libraries
from ood_nolabels.engine.evaluation import EvaluationResult
from ood_nolabels.methods.base import RunResult
from ood_nolabels.report.figures import nearest, write_diagnostics
from ood_nolabels.report.files import write_scores
from ood_nolabels.train import optimized_value, run

ALL_FIGURES = {
    "roc_knn",
    "scores_knn",
    "epoch_auroc",
    "retrieval",
    "embedding",
    "confusion",
}


def test_roc_points_integrate_to_sklearns_auroc():
    generator = torch.Generator().manual_seed(0)
    normal = torch.randn(200, generator=generator)
    ood = torch.randn(150, generator=generator) + 1.0
    ood[:20] = normal[:20]  # ties between the sets
    fpr, tpr = roc_points(normal, ood)
    labels = np.r_[np.zeros(200), np.ones(150)]
    expected = roc_auc_score(labels, np.r_[normal.numpy(), ood.numpy()])
    assert float(torch.trapezoid(tpr.double(), fpr.double())) == pytest.approx(expected, abs=1e-6)


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


def fake_result(datamodule, with_labels: bool = True) -> RunResult:
    """A finished run on the synthetic data: random features, their kNN-like scores."""
    generator = torch.Generator().manual_seed(0)
    features = {
        split: torch.randn(len(images), 8, generator=generator)
        for split, images in datamodule.images.items()
    }
    scores = {"knn": {s: f.norm(dim=1) for s, f in features.items() if s != NORMAL_TRAIN}}
    evaluation = EvaluationResult(scores=scores, features=features)
    metrics = {"ood/synthetic_4_5/knn/auroc": 0.9, "ood_epoch0/synthetic_4_5/knn/auroc": 0.8}
    metrics["ood_epoch1/synthetic_4_5/knn/auroc"] = 0.85
    labels = torch.arange(len(features[NORMAL_TRAIN])) % 4 if with_labels else None
    reference = features if with_labels else None
    return RunResult(metrics, evaluation, train_labels=labels, reference_features=reference)


@pytest.fixture
def datamodule(compose_cfg):
    from hydra.utils import instantiate

    module = instantiate(compose_cfg("+experiment=dn2_synthetic").data)
    module.setup()
    return module


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


def test_scores_file_names_each_image(tmp_path, datamodule):
    result = fake_result(datamodule)
    write_scores(result.evaluation, datamodule.images, tmp_path)
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert set(rows[0]) == {"image", "split", "index", "scorer", "score"}
    first_test = next(r for r in rows if r["split"] == NORMAL_TEST)
    assert first_test["image"] == f"{NORMAL_TEST}/0"  # in-memory images: split/index
    assert float(first_test["score"]) == pytest.approx(
        float(result.evaluation.scores["knn"][NORMAL_TEST][0])
    )
    assert len(rows) == sum(len(s) for s in result.evaluation.scores["knn"].values())


def test_progress_bar_names_the_stage_and_the_epoch():
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(L.LightningModule):
        stage_name = "simclr"

        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    bar = StageProgressBar(leave=True)
    descriptions = []

    class Spy(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            descriptions.append(bar.train_progress_bar.desc)

    trainer = L.Trainer(
        max_epochs=2, callbacks=[bar, Spy()], logger=False, enable_checkpointing=False
    )
    trainer.fit(Tiny(), DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=2))
    assert [d.rstrip(": ") for d in descriptions] == ["simclr 1/2", "simclr 2/2"]


def test_libraries_are_quiet_unless_verbose():
    quiet_libraries(verbose=False)
    assert logging.getLogger("faiss.loader").getEffectiveLevel() == logging.WARNING
    assert not logging.getLogger("lightning.pytorch.utilities.rank_zero").isEnabledFor(logging.INFO)
    quiet_libraries(verbose=True)
    assert logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)
    quiet_libraries(verbose=False)


def test_timing_table_lists_steps_and_a_total():
    timings = Timings()
    timings.add("simclr-abc", "trained", 12.34)
    timings.add("scan-def", "reused", 0.01)
    lines = timings.table().splitlines()
    assert "simclr-abc" in lines[2] and "trained" in lines[2] and "12.3" in lines[2]
    assert "reused" in lines[3]
    assert lines[-1].startswith("| total")


def test_optimized_metric_that_the_run_did_not_produce_lists_the_produced_ones():
    metrics = {"ood/digits_6_9/knn/auroc": 0.97, "cluster/acc": 0.99}
    assert optimized_value(metrics, "ood/digits_6_9/knn/auroc") == 0.97
    assert optimized_value(metrics, None) is None
    with pytest.raises(KeyError, match="ood/digits_6_9/knn/auroc") as error:
        optimized_value(metrics, "ood/digits/knn/auroc")
    assert "cluster/acc" in str(error.value) and "not a metric of this run" in str(error.value)


@pytest.mark.slow
def test_a_run_writes_its_figures_and_timings(compose_cfg, capsys):
    cfg = compose_cfg(
        "+experiment=dn2_synthetic",
        "logger=none",
        "callbacks=none",
        "plots.embedding=false",
    )
    run(cfg)
    plots = Path(cfg.paths.output_dir) / "plots"
    names = {p.stem for p in plots.iterdir()}
    assert names == {"roc_knn", "roc_mahalanobis", "scores_knn", "scores_mahalanobis", "retrieval"}
    out = capsys.readouterr().out
    assert "scoring: final model" in out and "| total" in out
