"""Stage 1 of ``scan_cifar10`` against the official SCAN code: neighbour mining and head selection.

Official files: github.com/wvangansbeke/Unsupervised-Classification (snapshot 952ec31).

* Mining (item 3): ``simclr.py`` L63, L130-138 mine the training set under the validation
  transform with the SimCLR model, whose forward is the L2-normalised projection-head output
  (``models/models.py`` L28-31); ``utils/memory.py`` L46-54 search ``topk + 1`` with faiss
  ``IndexFlatIP`` ("Sample itself is included") and L59 measure the accuracy without the anchor's
  column; ``data/custom_dataset.py`` L60-61, L71 keep ``indices[:, :num_neighbors + 1]`` and
  draw the neighbour uniformly from those, the anchor included.
* Selection (item 4): ``scan.py`` L99, L107-112, L130-131 score every head after every epoch
  with ``utils/evaluate_utils.py`` L87-119 (``scan_evaluate``: BCE of ``<p_anchor, p_candidate>``
  over all (anchor, candidate) pairs minus the entropy of the mean prediction, weight 1), keep the
  lowest head and the weights of the epoch with the lowest such loss, and reload them at the end.
  The anchors and neighbours go through the model in two calls (``scan_train``).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from helpers import quiet_trainer
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from ood_nolabels.core import search
from ood_nolabels.core.neighbors import mine_neighbors, neighbor_purity
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.data.images import ArrayImages, NeighborsDataset
from ood_nolabels.engine.artifacts import CachedStage, load_artifact
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.pipelines.scan_stage import train_scan
from ood_nolabels.methods.pipelines.stage1 import cluster_normal_images
from ood_nolabels.models.backbones import Backbone
from ood_nolabels.modules.scan import SCANModule
from ood_nolabels.train import build_runtime

SEARCH_PATHS = [
    False,
    pytest.param(True, marks=pytest.mark.skipif(search.faiss is None, reason="needs faiss")),
]
FAST = ("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")


def frozen_sgd(params):
    return torch.optim.SGD(params, lr=0.0)


def tiny_backbone(dim: int = 8, batch_norm: bool = False) -> Backbone:
    layers = [nn.Flatten(), *([nn.BatchNorm1d(3 * 4 * 4)] if batch_norm else [])]
    model = nn.Sequential(*layers, nn.Linear(3 * 4 * 4, dim))
    return Backbone(model, feature_dim=dim, image_size=4, mean=(0.5,) * 3, std=(0.5,) * 3)


# -- item 3: mining ------------------------------------------------------------------------------


@pytest.mark.parametrize("use_faiss", SEARCH_PATHS)
def test_mining_with_the_anchor_returns_it_among_k_plus_1_brute_force_candidates(use_faiss):
    """utils/memory.py: ``search(features, topk + 1)``, the sample itself included."""
    features = np.random.default_rng(4).normal(size=(150, 16)).astype(np.float32)
    got = mine_neighbors(features, k=5, use_faiss=use_faiss, include_self=True, chunk_size=7)
    assert got.shape == (150, 6) and got.dtype == torch.long
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    brute_force = np.argsort(-(unit @ unit.T), axis=1, kind="stable")[:, :6]  # self ranks first
    assert np.array_equal(brute_force[:, 0], np.arange(150))
    np.testing.assert_array_equal(got.numpy(), brute_force)
    without = mine_neighbors(features, k=5, use_faiss=use_faiss, chunk_size=7)
    assert torch.equal(got[:, 1:], without)


@pytest.mark.parametrize("use_faiss", SEARCH_PATHS)
def test_mining_with_the_anchor_lists_it_exactly_once_among_duplicates(use_faiss):
    base = np.random.default_rng(5).normal(size=(20, 8)).astype(np.float32)
    features = np.concatenate([base, base, base])  # each point ties with its two copies
    got = mine_neighbors(features, k=3, use_faiss=use_faiss, include_self=True, chunk_size=16)
    anchors = torch.arange(60).unsqueeze(1)
    assert got.shape == (60, 4)
    assert torch.equal((got == anchors).sum(dim=1), torch.ones(60, dtype=torch.long))
    assert (got[:, :3] % 20 == anchors % 20).all()  # the anchor and its two copies first


def test_neighbor_purity_leaves_the_anchor_out():
    """utils/memory.py: the accuracy compares ``indices[:, 1:]`` with the anchor's label."""
    labels = torch.tensor([0, 0, 1, 1])
    with_anchor = torch.tensor([[0, 1, 2], [1, 0, 3], [2, 3, 0], [3, 2, 1]])
    assert neighbor_purity(with_anchor, labels) == pytest.approx(0.5)  # not 8 / 12
    assert neighbor_purity(with_anchor, labels) == neighbor_purity(with_anchor[:, 1:], labels)


def test_the_anchor_is_drawn_as_neighbour_one_time_in_k_plus_1():
    """data/custom_dataset.py: ``np.random.choice(self.indices[index], 1)`` over all k + 1."""
    features = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    neighbors = mine_neighbors(features, k=4, use_faiss=False, include_self=True)
    pixels = np.arange(30, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    dataset = NeighborsDataset(ArrayImages(pixels), neighbors, T.PILToTensor())
    torch.manual_seed(0)
    draws = 3000
    picked_self = sum(
        int(torch.equal(*dataset[i % 30][:2])) for i in range(draws)
    )  # every image differs, so equal views mean the anchor itself was drawn
    assert picked_self / draws == pytest.approx(1 / 5, abs=0.025)


def mined(compose_cfg, features: str, include_self: bool) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = compose_cfg(
        *FAST,
        "method=stage1_only",
        "stage1.stop_after=mining",
        f"stage1.mining.features={features}",
        f"stage1.mining.include_self={str(include_self).lower()}",
    )
    result = cluster_normal_images(build_runtime(cfg), cfg.stage1, cfg.K)
    assert "cluster/mining/neighbor_purity" in result.metrics
    directory = result.stages[-1].directory
    assert directory.name.startswith("mining-")
    return load_artifact(directory / "features.pt"), load_artifact(directory / "neighbors.pt")


def test_mining_features_choose_the_projection_or_the_backbone(compose_cfg):
    """simclr.py / models/models.py: mined in the normalised projection head's output."""
    cfg = compose_cfg(*FAST).stage1
    projection_dim = cfg.simclr.module.projection_dim
    feature_dim = instantiate(cfg.simclr.backbone).feature_dim
    assert projection_dim != feature_dim

    features, neighbors = mined(compose_cfg, "projection", include_self=True)
    assert features.shape == (64, projection_dim)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(64))
    assert neighbors.shape == (64, cfg.mining.num_neighbors + 1)
    assert torch.equal(neighbors[:, 0], torch.arange(64))

    features, neighbors = mined(compose_cfg, "backbone", include_self=False)
    assert features.shape == (64, feature_dim)
    assert neighbors.shape == (64, cfg.mining.num_neighbors)
    assert not (neighbors == torch.arange(64).unsqueeze(1)).any()


def test_unknown_mining_features_are_rejected(compose_cfg):
    cfg = compose_cfg(*FAST, "stage1.mining.features=logits")
    with pytest.raises(ValueError, match="mining.features='logits'"):
        cluster_normal_images(build_runtime(cfg), cfg.stage1, cfg.K)


def test_recipes_mine_and_select_as_configured(compose_cfg):
    official = compose_cfg("+experiment=stage1_cifar10").stage1
    assert official.mining.features == "projection" and official.mining.include_self
    assert official.scan.module.selection == "validation"
    digits = compose_cfg("+experiment=stage1_digits").stage1  # kept as measured
    assert digits.mining.features == "backbone" and not digits.mining.include_self
    assert digits.scan.module.selection == "train_loss"
    synthetic = compose_cfg(*FAST).stage1
    assert synthetic.mining.features == "backbone" and not synthetic.mining.include_self
    assert synthetic.scan.module.selection == "validation"


# -- item 4: head selection and best epoch -------------------------------------------------------


class Images(torch.utils.data.Dataset):
    """``(image, index)`` like the datamodule's loaders, or SCAN's ``(anchor, neighbour, index)``
    with the neighbour drawn from ``neighbors``."""

    def __init__(self, n: int = 24, neighbors: torch.Tensor | None = None) -> None:
        self.images = torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        self.neighbors = neighbors

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        if self.neighbors is None:
            return self.images[i], i
        j = int(self.neighbors[i, torch.randint(self.neighbors.shape[1], ())])
        return self.images[i], self.images[j], i


def official_selection_losses(logits: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """scan_evaluate in numpy: ``BCE(<p_i, p_j>, 1)`` over all pairs - entropy(mean p)."""
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    similarity = (probs @ probs.T)[np.arange(len(probs))[:, None], neighbors]
    consistency = -np.maximum(np.log(similarity), -100).mean()
    mean = np.maximum(probs.mean(axis=0), 1e-8)
    return consistency - (-(mean * np.log(mean)).sum())


def test_validation_selection_picks_the_lowest_label_free_loss_with_entropy_weight_1():
    torch.manual_seed(0)
    n, heads = 24, 5
    neighbors = torch.cat([torch.arange(n)[:, None], torch.randint(n, (n, 3))], dim=1)
    module = SCANModule(
        tiny_backbone(),
        num_clusters=3,
        optimizer=frozen_sgd,  # lr 0: the weights validated are the weights checked here
        num_heads=heads,
        entropy_weight=5.0,
        selection="validation",
        neighbors=neighbors,
    )
    order = torch.randperm(n).tolist()  # batches out of dataset order: placed by their indices
    module.validation_loader = DataLoader(Images(n), batch_size=5, sampler=order)
    quiet_trainer(max_epochs=1).fit(module, DataLoader(Images(n, neighbors), batch_size=8))

    module.eval()
    with torch.no_grad():
        features = module.backbone(Images(n).images)
        expected = np.array(
            [
                official_selection_losses(head(features).double().numpy(), neighbors.numpy())
                for head in module.heads
            ]
        )
    np.testing.assert_allclose(module.val_head_losses.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert len(set(np.round(expected, 4))) == heads  # the heads differ: the argmin means something
    assert module.best_head == int(expected.argmin())
    assert module.cluster_model().head is module.heads[int(expected.argmin())]
    logged = module.trainer.callback_metrics["scan/val_loss"].item()
    assert logged == pytest.approx(expected.min(), rel=1e-4)


def test_anchors_and_neighbours_are_forwarded_in_two_calls():
    """BatchNorm running statistics: anchors' batch first, then the neighbours' (momentum 0.1)."""
    data = Images(8, torch.roll(torch.arange(8), 1)[:, None])
    backbone = tiny_backbone(batch_norm=True)
    module = SCANModule(backbone, num_clusters=3, optimizer=frozen_sgd, num_heads=1)
    anchors, neighbors, _ = next(iter(DataLoader(data, batch_size=8)))
    batch_norm = backbone.model[1]
    quiet_trainer(max_epochs=1).fit(module, DataLoader(data, batch_size=8))
    assert int(batch_norm.num_batches_tracked) == 2
    after_anchors = 0.1 * anchors.flatten(1).mean(0)
    expected = 0.9 * after_anchors + 0.1 * neighbors.flatten(1).mean(0)
    torch.testing.assert_close(batch_norm.running_mean, expected)


class SharpenThenCollapse(L.Callback):
    """Epoch 0: confident heads (a clearly negative selection loss, see below); from epoch 1 on,
    zeroed heads: uniform predictions, a selection loss of exactly 0."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        with torch.no_grad():
            for parameter in pl_module.heads.parameters():
                parameter.mul_(20.0 if trainer.current_epoch == 0 else 0.0)


class Record(L.Callback):
    """Every epoch's weights and selection losses, as validated."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.losses: list[torch.Tensor] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.states.append({k: v.clone() for k, v in pl_module.state_dict().items()})
            self.losses.append(pl_module.val_head_losses.clone())


def test_the_best_epochs_weights_and_head_are_kept(compose_cfg, monkeypatch):
    """scan.py: the checkpoint of the lowest-loss epoch is saved and reloaded, not the last."""
    cfg = compose_cfg(*FAST, "stage1.scan.epochs=3", "stage1.scan.optimizer.lr=0")
    runtime = build_runtime(cfg)
    runtime.datamodule.setup()
    images = runtime.datamodule.images[NORMAL_TRAIN]
    n = len(images)
    # Each image its own only candidate: every head's loss is <= 0, and 0 only when uniform.
    neighbors = torch.arange(n)[:, None]
    record = Record()
    original = Runtime.make_trainer
    monkeypatch.setattr(
        Runtime,
        "make_trainer",
        lambda self, callbacks=(), **kw: original(
            self, callbacks=[*callbacks, SharpenThenCollapse(), record], **kw
        ),
    )
    backbone = instantiate(cfg.stage1.simclr.backbone)  # BatchNorm: its statistics move too
    upstream = CachedStage(Path(cfg.paths.artifact_dir), "mining", "0" * 12, 0)
    model, _, stage = train_scan(
        runtime, images, backbone, neighbors, cfg.stage1.scan, cfg.K, upstream
    )

    assert len(record.losses) == 3
    assert record.losses[0].min() < -0.1  # epoch 0 beats the collapsed epochs 1 and 2
    torch.testing.assert_close(record.losses[1], torch.zeros(2), atol=1e-6, rtol=0)
    saved = load_artifact(stage.directory / "scan.pt")
    assert saved.keys() == record.states[0].keys()
    # Every tensor as validated (written at validation end, the best checkpoint holds the
    # previous epoch's last_head_losses: the validation selection does not use them).
    for key, value in record.states[0].items():
        assert torch.equal(saved[key], value), key
    assert not torch.equal(
        saved["backbone.model.0.1.running_mean"],
        record.states[2]["backbone.model.0.1.running_mean"],
    )  # the last epoch's statistics differ: the best epoch's were restored
    best = int(record.losses[0].argmin())
    assert torch.equal(model.head.weight, record.states[0][f"heads.{best}.weight"])
    assert not (stage.directory / "checkpoints").exists()


class Interrupt(Exception):
    pass


class ScaleHeads(L.Callback):
    """Multiply the heads by ``factors[epoch]`` at the start of that epoch (lr 0 elsewhere)."""

    def __init__(self, factors: dict[int, float], interrupt_at: int | None = None) -> None:
        self.factors = factors
        self.interrupt_at = interrupt_at

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.interrupt_at:
            raise Interrupt
        with torch.no_grad():
            for parameter in pl_module.heads.parameters():
                parameter.mul_(self.factors.get(trainer.current_epoch, 1.0))


def test_a_resumed_stage_keeps_the_best_epoch_from_before_the_interruption(
    compose_cfg, monkeypatch
):
    """Epoch 1 is the best, the run stops before epoch 2, whose loss lies between epochs 0 and 1:
    after resuming, epoch 1's weights stay kept (the best checkpoint's state is up to date in
    the resume checkpoint of the epoch that set it)."""
    cfg = compose_cfg(*FAST, "stage1.scan.epochs=3", "stage1.scan.optimizer.lr=0")
    runtime = build_runtime(cfg)
    runtime.datamodule.setup()
    images = runtime.datamodule.images[NORMAL_TRAIN]
    neighbors = torch.arange(len(images))[:, None]
    upstream = CachedStage(Path(cfg.paths.artifact_dir), "mining", "0" * 12, 0)
    record = Record()
    original = Runtime.make_trainer

    def scan(callback: L.Callback):
        with monkeypatch.context() as patch:
            patch.setattr(
                Runtime,
                "make_trainer",
                lambda self, callbacks=(), **kw: original(
                    self, callbacks=[*callbacks, callback, record], **kw
                ),
            )
            backbone = instantiate(cfg.stage1.simclr.backbone)
            return train_scan(
                runtime, images, backbone, neighbors, cfg.stage1.scan, cfg.K, upstream
            )

    factors = {1: 20.0, 2: 0.25}  # epoch 2 predicts like heads x 5: between epochs 0 and 1
    with pytest.raises(Interrupt):
        scan(ScaleHeads(factors, interrupt_at=2))
    _, _, stage = scan(ScaleHeads(factors))

    assert stage.outcome == "resumed" and len(record.losses) == 3
    best = [float(losses.min()) for losses in record.losses]
    assert best[1] < best[2] < best[0]
    saved = load_artifact(stage.directory / "scan.pt")
    for key, value in record.states[1].items():
        assert torch.equal(saved[key], value), key
