"""Training keys: an fp32 cache never serves a bf16 run, nor a one-process cache a two-process
run.
"""

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from ood_nolabels.data.sampling import EpochShuffle
from ood_nolabels.engine.runtime import (
    Runtime,
    claim_launch_rank,
    launch_rank,
    loader_key,
    training_key,
)
from ood_nolabels.train import store_of

OURS = ("+experiment=ours_synthetic", "logger=none", "callbacks=none")


@pytest.mark.parametrize(
    ("overrides", "changed"),
    [
        (("trainer.precision=bf16-mixed",), {"precision": "bf16-mixed"}),
        (("trainer=ddp_cpu", "trainer.devices=2"), {"world_size": 2}),
        (("+trainer.num_nodes=2",), {"world_size": 2}),
    ],
)
def test_precision_and_world_size_change_every_training_key(compose_cfg, overrides, changed):
    """An fp32 cache never serves a bf16 run, nor a one-process cache a two-process run."""
    plain, other = compose_cfg(*OURS), compose_cfg(*OURS, *overrides)
    assert training_key(plain.trainer) == {}
    assert changed.items() <= training_key(other.trainer).items()
    assert (
        store_of(plain).stage("simclr", {"lr": 0.1}).directory.name
        != store_of(other).stage("simclr", {"lr": 0.1}).directory.name
    )


@pytest.mark.parametrize(
    ("environ", "devices", "nodes", "rank"),
    [
        ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, 1, 2, 1),  # the rehearsal's second node
        ({"NODE_RANK": "1"}, 4, 2, 4),  # Lightning's launch: no LOCAL_RANK on a node's first
        ({"NODE_RANK": "2", "LOCAL_RANK": "3"}, 4, 3, 11),
        ({"GROUP_RANK": "1", "LOCAL_RANK": "1"}, 2, 2, 3),  # torchelastic's name for the node rank
        ({"NODE_RANK": "1", "LOCAL_RANK": "0", "RANK": "5"}, 4, 2, None),  # RANK says it itself
        ({"LOCAL_RANK": "1"}, 2, 1, None),  # one node: Lightning's guess is right
        ({}, 1, 1, None),
    ],
)
def test_launch_rank_follows_lightnings_global_rank_formula(environ, devices, nodes, rank):
    trainer = OmegaConf.create({"accelerator": "cpu", "devices": devices, "num_nodes": nodes})
    assert launch_rank(trainer, environ) == rank


def test_claim_launch_rank_stops_a_second_node_acting_as_rank_zero(monkeypatch):
    """Before its first Trainer, node 1's first process must not write results or take locks."""
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    for name in ("RANK", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    claim_launch_rank(OmegaConf.create({"accelerator": "cpu", "devices": 1, "num_nodes": 2}))
    assert rank_zero_only.rank == 1


class RandomViews(torch.utils.data.Dataset):
    """Each item a random draw, as an augmentation is."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(1)


def views(workers: int) -> torch.Tensor:
    L.seed_everything(0, workers=True, verbose=False)
    loader = torch.utils.data.DataLoader(RandomViews(), batch_size=8, num_workers=workers)
    return next(iter(loader))


def test_loader_workers_change_the_views_so_they_join_the_stage_keys(compose_cfg):
    assert torch.equal(views(0), views(0))  # seeded: a rerun draws the same views
    assert not torch.equal(views(0), views(1))  # a worker draws from its own stream
    assert loader_key(OmegaConf.create({"num_workers": 0})) == {}
    assert loader_key(OmegaConf.create({"num_workers": 4})) == {"num_workers": 4}
    plain = compose_cfg(*OURS)
    workers = compose_cfg(*OURS, "data.num_workers=2")
    assert (
        store_of(plain).stage("simclr", {}).directory.name
        == store_of(compose_cfg(*OURS, "data.num_workers=0")).stage("simclr", {}).directory.name
    )
    assert (
        store_of(plain).stage("simclr", {}).directory.name
        != store_of(workers).stage("simclr", {}).directory.name
    )


class BatchRecorder(L.LightningModule):
    """Records the images of every training batch, by epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        (images,) = batch
        self.seen.setdefault(self.current_epoch, []).extend(images.flatten().int().tolist())
        return self.layer(images).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit_batches(tmp_path, steps_per_epoch: int | None, **trainer) -> BatchRecorder:
    """40 images in batches of 4 (10 a full epoch), 2 epochs, through Runtime.fit."""
    config = {"_target_": "lightning.pytorch.Trainer", "accelerator": "cpu", "devices": 1}
    runtime = Runtime(
        None, None, OmegaConf.create(config | {"enable_progress_bar": False} | trainer)
    )
    images = torch.utils.data.TensorDataset(torch.arange(40.0)[:, None])
    sampler = EpochShuffle(40, seed=0)
    loader = torch.utils.data.DataLoader(images, batch_size=4, sampler=sampler)
    module = BatchRecorder()
    runtime.fit(module, loader, 2, tmp_path, steps_per_epoch=steps_per_epoch)
    return module


def test_steps_per_epoch_ends_each_epoch_early_on_another_part_of_the_shuffle(tmp_path):
    whole = fit_batches(tmp_path / "whole", None)
    assert [sorted(whole.seen[e]) for e in (0, 1)] == [list(range(40))] * 2
    short = fit_batches(tmp_path / "short", 3)
    assert [len(short.seen[e]) for e in (0, 1)] == [12, 12]  # 3 batches of 4
    assert short.seen[0] == whole.seen[0][:12]  # the first batches of the epoch's own shuffle
    assert short.seen[1] == whole.seen[1][:12] != short.seen[0]
    assert short.trainer.global_step == 6


def test_a_smaller_trainer_limit_still_wins(tmp_path):
    tiny = fit_batches(tmp_path, 3, limit_train_batches=2)  # debug=tiny
    assert [len(tiny.seen[e]) for e in (0, 1)] == [8, 8]
    assert fit_batches(tmp_path / "b", 3, limit_train_batches=5).trainer.global_step == 6
