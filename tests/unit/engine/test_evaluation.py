"""The OOD evaluation callback: per-epoch and final metrics equal an independent scoring."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import conv_backbone, quiet_trainer
from lightning.pytorch.loggers import Logger
from sklearn.metrics import roc_auc_score
from torch import nn

from ood_nolabels.core.metric_keys import MetricKey
from ood_nolabels.data.datamodule import NORMAL_TEST, NORMAL_TRAIN, OODDataModule
from ood_nolabels.data.images import IndexedDataset
from ood_nolabels.data.synthetic import SyntheticSource
from ood_nolabels.engine.evaluation import OODEvaluation, epoch_mean
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.modules.finetune import FinetuneModule
from ood_nolabels.modules.weight_averaging import EpochSnapshots, EpochWeightAveraging
from ood_nolabels.scorers.knn import KNNScorer
from ood_nolabels.scorers.mahalanobis import MahalanobisScorer


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[dict, int | None]] = []

    name = "recording"
    version = 0

    def log_metrics(self, metrics, step=None) -> None:
        self.calls.append((dict(metrics), step))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def bn_backbone() -> Backbone:
    return conv_backbone(batchnorm=True)


def independent_auroc(backbone: Backbone, dm: OODDataModule, ood: str) -> float:
    """Direct eval-mode forward passes, brute-force cosine 1-NN, sklearn's AUROC."""
    transform = backbone.transform()
    backbone.eval()

    def features(split: str) -> np.ndarray:
        images = dm.images[split]
        batch = torch.stack([transform(images.get_image(i)) for i in range(len(images))])
        with torch.no_grad():
            return F.normalize(backbone(batch), dim=1).double().numpy()

    bank = features(NORMAL_TRAIN)
    normal, anomalies = features(NORMAL_TEST), features(ood)
    distance = lambda x: (1 - x @ bank.T).min(1)  # noqa: E731
    y = np.r_[np.zeros(len(normal)), np.ones(len(anomalies))]
    return roc_auc_score(y, np.r_[distance(normal), distance(anomalies)])


def test_per_epoch_and_final_metrics_equal_an_independent_scoring(tmp_path):
    dm = OODDataModule(
        SyntheticSource(classes=[0, 1, 2], per_class=12), {"ood": SyntheticSource(classes=[4, 5])}
    )
    dm.setup()
    backbone = bn_backbone()
    labels = torch.as_tensor(dm.images[NORMAL_TRAIN].labels)
    logger = RecordingLogger()
    evaluation = OODEvaluation(
        {"knn": KNNScorer(k=1), "mahalanobis": MahalanobisScorer(shrinkage=0.1)},
        dm.eval_loaders(backbone.transform()),
        train_labels=labels,
        every_n_epochs=1,
        loggers=[logger],
    )
    module = FinetuneModule(
        backbone, labels, 3, optimizer=lambda params: torch.optim.Adam(params, lr=0.05)
    )
    snapshots = EpochSnapshots(tmp_path / "epochs")
    loader = dm.train_loader(IndexedDataset(dm.images[NORMAL_TRAIN], backbone.transform()), 8)
    quiet_trainer(max_epochs=3, callbacks=[EpochWeightAveraging(), snapshots, evaluation]).fit(
        module, loader
    )
    assert sorted(evaluation.epochs) == [0, 1, 2]
    key = MetricKey("ood", "knn", "auroc")
    epoch_aurocs = []
    for epoch in range(3):
        reference = bn_backbone()
        reference.load_state_dict(torch.load(snapshots.path(epoch)))
        expected = independent_auroc(reference, dm, "ood")
        logged = evaluation.epochs[epoch].metrics[key.at("ood_epoch", epoch)]
        assert logged == pytest.approx(expected, abs=1e-6), epoch  # float32 AUROC
        epoch_aurocs.append(logged)
    # The weights differ between epochs, so the check above compares distinct models.
    assert (
        len(
            {
                tuple(torch.load(snapshots.path(e))["model.0.weight"].flatten()[:3].tolist())
                for e in range(3)
            }
        )
        == 3
    )
    assert evaluation.final.metrics[key] == pytest.approx(
        independent_auroc(module.backbone, dm, "ood"), abs=1e-6
    )
    assert epoch_mean(evaluation.epochs)["ood_epoch_mean/ood/knn/auroc"] == pytest.approx(
        sum(epoch_aurocs) / 3
    )
    # Logged as one series against the epoch, then the final model under ood/...
    per_epoch = [m for m, _ in logger.calls if "epoch" in m]
    assert [m["epoch"] for m in per_epoch] == [0, 1, 2]
    assert [m["ood_epoch/ood/knn/auroc"] for m in per_epoch] == epoch_aurocs
    final = [m for m, _ in logger.calls if "ood/ood/knn/auroc" in m]
    assert len(final) == 1 and final[0]["ood/ood/knn/auroc"] == evaluation.final.metrics[key]
    # Per-image scores are kept: one per normal-test and OOD image, consistent with the metric.
    scores = evaluation.final.scores["knn"]
    assert scores[NORMAL_TEST].shape == (len(dm.images[NORMAL_TEST]),)
    y = np.r_[np.zeros(len(scores[NORMAL_TEST])), np.ones(len(scores["ood"]))]
    auroc = roc_auc_score(y, np.r_[scores[NORMAL_TEST].numpy(), scores["ood"].numpy()])
    assert auroc == pytest.approx(evaluation.final.metrics[key])


def test_every_n_epochs_and_off():
    dm = OODDataModule(SyntheticSource(classes=[0, 1], per_class=6), {"o": SyntheticSource([5])})
    dm.setup()
    backbone = bn_backbone()
    labels = torch.as_tensor(dm.images[NORMAL_TRAIN].labels)
    results = {}
    for every in (2, None):
        evaluation = OODEvaluation(
            {"knn": KNNScorer()}, dm.eval_loaders(backbone.transform()), every_n_epochs=every
        )
        module = FinetuneModule(
            backbone, labels, 2, optimizer=lambda params: torch.optim.SGD(params, 0.01)
        )
        loader = dm.train_loader(IndexedDataset(dm.images[NORMAL_TRAIN], backbone.transform()), 4)
        quiet_trainer(max_epochs=4, callbacks=[evaluation]).fit(module, loader)
        results[every] = evaluation
    assert sorted(results[2].epochs) == [1, 3]
    assert results[None].epochs == {} and results[None].final is not None


def test_evaluation_needs_normal_loaders_and_scorers():
    dm = OODDataModule(SyntheticSource(classes=[0]), {"o": SyntheticSource([5])})
    loaders = dm.eval_loaders(bn_backbone().transform())
    with pytest.raises(ValueError, match="normal_train"):
        OODEvaluation({"knn": KNNScorer()}, {"o": loaders["o"], NORMAL_TEST: loaders[NORMAL_TEST]})
    with pytest.raises(ValueError, match="no scorer"):
        OODEvaluation({}, loaders)
    with pytest.raises(ValueError, match="every_n_epochs=-1"):
        OODEvaluation({"knn": KNNScorer()}, loaders, every_n_epochs=-1)


def test_constant_scores_stop_the_evaluation():
    dm = OODDataModule(SyntheticSource(classes=[0]), {"o": SyntheticSource([5])})
    dead = Backbone(
        nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)), 4, 16, (0.5,) * 3, (0.5,) * 3
    )
    nn.init.zeros_(dead.model[1].weight)
    nn.init.ones_(dead.model[1].bias)  # every image -> the same feature
    evaluation = OODEvaluation({"knn": KNNScorer()}, dm.eval_loaders(dead.transform()))
    features = {
        name: dead(torch.stack([x for x, _ in loader.dataset]))
        for name, loader in evaluation.loaders.items()
    }
    result = evaluation.evaluate(features)
    assert result.metrics == {}
    assert (
        "same score" in result.failures["knn"] and "collapsed or diverged" in result.failures["knn"]
    )


def test_a_failing_scorer_keeps_the_other_scorers_results():
    dm = OODDataModule(SyntheticSource(classes=[0, 1], per_class=8), {"o": SyntheticSource([5])})

    class Broken(KNNScorer):
        def fit(self, features, labels=None):
            raise torch.linalg.LinAlgError("linalg.eigh: failed to converge")

    backbone = conv_backbone()
    evaluation = OODEvaluation(
        {"broken": Broken(), "knn": KNNScorer()}, dm.eval_loaders(backbone.transform())
    )
    features = {
        name: backbone(torch.stack([x for x, _ in loader.dataset]))
        for name, loader in evaluation.loaders.items()
    }
    result = evaluation.evaluate(features)
    assert set(result.failures) == {"broken"} and "failed to converge" in result.failures["broken"]
    assert MetricKey("o", "knn", "auroc") in result.metrics
