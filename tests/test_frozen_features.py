"""Stage 1 on pretrained backbones: cached features, heads-only SCAN / self-label, K=auto, MoCo.

``stage1=frozen_features`` extracts the features once and trains heads on them;
``stage1=scan_imagenet`` is SCAN's official ImageNet-50 recipe (a frozen MoCo v2 ResNet-50,
heads-only SCAN); ``K=auto`` chooses K by the eigengap of the mined kNN graph.
"""

from __future__ import annotations

import logging
import runpy
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from helpers import conv_backbone
from omegaconf import OmegaConf, open_dict
from PIL import Image
from scipy.sparse.csgraph import laplacian
from torchvision.models import resnet50

from ood_nolabels.core import eigengap as auto_k
from ood_nolabels.core.eigengap import eigengap_k, knn_graph
from ood_nolabels.core.neighbors import mine_neighbors
from ood_nolabels.data.augment import Cutout, scan_strong_transform
from ood_nolabels.data.datamodule import NORMAL_TRAIN
from ood_nolabels.engine.artifacts import CachedStage, load_artifact
from ood_nolabels.engine.runtime import Runtime
from ood_nolabels.methods.pipelines.scan_stage import train_scan
from ood_nolabels.methods.pipelines.stage1 import check_recipe, cluster_normal_images
from ood_nolabels.models import moco
from ood_nolabels.train import build_runtime, run

FAST = ("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")
# A deterministic pretrained stand-in (seeded init, BatchNorm statistics that a training-mode
# forward would move).
PRETEXT = {"_target_": "helpers.conv_backbone", "image_size": 16, "batchnorm": True}


def frozen_features_cfg(compose_cfg, *overrides: str):
    cfg = compose_cfg(*FAST, "stage1=frozen_features", *overrides)
    with open_dict(cfg):
        cfg.stage1.pretext = OmegaConf.create(PRETEXT)
        cfg.stage1.mining.num_neighbors = 5
        cfg.stage1.scan.epochs = 3
        cfg.stage1.selflabel.epochs = 2
        cfg.stage1.selflabel.module.threshold = 0.2  # caching is the point: every sample counts
        cfg.stage1.collapse.max_cluster_share = 1.0
        cfg.stage1.collapse.max_empty_fraction = 1.0
    return cfg


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


class HeadsAtStart(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.heads = state(pl_module.heads)


def test_heads_only_scan_on_images_leaves_the_backbone_bit_identical(compose_cfg, monkeypatch):
    """scan_imagenet's SCAN (update_backbone=false, SGD lr 5 momentum 0.9): the heads move, every
    backbone tensor (BatchNorm running statistics included) stays bit-identical."""
    cfg = compose_cfg(*FAST, "stage1.scan.epochs=2")
    with open_dict(cfg):
        cfg.stage1.scan.module.update_backbone = False
        cfg.stage1.scan.optimizer = OmegaConf.create(
            {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 5.0, "momentum": 0.9}
        )
    runtime = build_runtime(cfg)
    runtime.datamodule.setup()
    images = runtime.datamodule.images[NORMAL_TRAIN]
    backbone = conv_backbone(image_size=16, batchnorm=True)
    before = state(backbone)
    neighbors = torch.roll(torch.arange(len(images)), 1)[:, None]
    upstream = CachedStage(Path(cfg.paths.artifact_dir), "mining", "0" * 12, 0)
    record = HeadsAtStart()
    original = Runtime.make_trainer
    monkeypatch.setattr(
        Runtime,
        "make_trainer",
        lambda self, callbacks=(), **kw: original(self, callbacks=[*callbacks, record], **kw),
    )
    model, _, _ = train_scan(runtime, images, backbone, neighbors, cfg.stage1.scan, cfg.K, upstream)
    after = backbone.state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert torch.equal(value, after[name]), name
    assert any("running_mean" in name for name in before)
    assert model.backbone is backbone
    initial = [value for name, value in record.heads.items() if name.endswith("weight")]
    assert initial and not any(torch.equal(model.head.weight, weight) for weight in initial)


def test_frozen_features_trains_heads_on_features_extracted_once(compose_cfg, caplog):
    caplog.set_level(logging.INFO, logger="ood_nolabels.methods.pipelines.stage1")
    cfg = frozen_features_cfg(compose_cfg)
    result = cluster_normal_images(build_runtime(cfg), cfg.stage1, cfg.K)
    stages = {stage.stage: stage for stage in result.stages}
    assert list(stages) == ["features", "mining", "scan", "selflabel"]
    assert all(stage.outcome == "trained" for stage in stages.values())
    # The returned backbone is the pretext, unchanged: bit-identical to a fresh one, and its
    # features are exactly the cached ones.
    fresh = conv_backbone(image_size=16, batchnorm=True)
    for name, value in fresh.state_dict().items():
        assert torch.equal(result.backbone.state_dict()[name], value), name
    cached = load_artifact(stages["features"].directory / "features.pt")
    runtime = build_runtime(cfg)
    loader = {NORMAL_TRAIN: runtime.datamodule.loader(NORMAL_TRAIN, fresh.transform())}
    assert torch.equal(runtime.extract(fresh, loader)[NORMAL_TRAIN], cached)
    # Neighbours mined in that space, as an independent search finds them.
    mined = load_artifact(stages["mining"].directory / "neighbors.pt")
    assert torch.equal(mined, mine_neighbors(cached, 5, use_faiss=False, include_self=True))
    assert result.pseudo_labels.shape == (len(cached),)
    assert "stage 1 (features -> mining -> scan -> selflabel)" in caplog.text


def test_cached_features_are_reused_by_a_second_run_and_another_k(compose_cfg, monkeypatch):
    cfg = frozen_features_cfg(compose_cfg)
    cluster_normal_images(build_runtime(cfg), cfg.stage1, cfg.K)

    def no_extraction(*args, **kwargs):
        raise AssertionError("a second run ran a model over the data")

    with monkeypatch.context() as patch:
        patch.setattr(Runtime, "extract", no_extraction)
        again = cluster_normal_images(build_runtime(cfg), cfg.stage1, cfg.K)
    assert [s.outcome for s in again.stages] == ["reused"] * 4
    other_k = cluster_normal_images(build_runtime(cfg), cfg.stage1, cfg.K + 1)
    assert [s.outcome for s in other_k.stages] == ["reused", "reused", "trained", "trained"]


def test_on_features_needs_a_pretrained_pretext(compose_cfg):
    cfg = compose_cfg(*FAST, "+stage1.on_features=true")
    with pytest.raises(ValueError, match="needs a pretrained stage1.pretext"):
        check_recipe(cfg.stage1)


# -- K=auto --------------------------------------------------------------------------------------
def test_knn_graph_is_symmetric_and_leaves_the_anchor_out():
    neighbors = torch.tensor([[0, 1], [1, 2], [2, 0]])  # anchors mined among their candidates
    graph = knn_graph(neighbors).toarray()
    np.testing.assert_array_equal(graph, [[0, 1, 1], [1, 0, 1], [1, 1, 0]])


def test_eigengap_finds_the_number_of_disconnected_groups():
    """c disjoint groups: exactly c zero eigenvalues of the normalised Laplacian (scipy's)."""
    sizes = [12, 9, 15, 10]
    starts = np.cumsum([0, *sizes[:-1]])
    rows = [
        [start + (i + j) % size for j in range(1, 4)]
        for start, size in zip(starts, sizes, strict=True)
        for i in range(size)
    ]
    choice = eigengap_k(torch.tensor(rows), 2, 8)
    assert choice.k == 4
    reference = np.sort(
        np.linalg.eigvalsh(laplacian(knn_graph(torch.tensor(rows)).toarray(), normed=True))
    )
    np.testing.assert_allclose(choice.eigenvalues, reference[:9], atol=1e-8)
    assert choice.gaps[choice.k_values.index(4)] == pytest.approx(reference[4] - reference[3])


def test_eigengap_on_mined_neighbours_of_blobs():
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(16)[:5] * 10
    points = torch.cat([c + torch.randn(40, 16, generator=generator) for c in centres])
    neighbors = mine_neighbors(points, 10, use_faiss=False, include_self=True)
    assert eigengap_k(neighbors, 2, 12).k == 5


def test_sparse_eigensolver_agrees_with_the_dense_one(monkeypatch):
    """Large sets use ARPACK on the sparse graph: same spectrum as the dense decomposition."""
    generator = torch.Generator().manual_seed(1)
    points = torch.cat([c + torch.randn(30, 8, generator=generator) for c in torch.eye(8)[:3] * 8])
    neighbors = mine_neighbors(points, 8, use_faiss=False)
    dense = eigengap_k(neighbors, 2, 6)
    monkeypatch.setattr(auto_k, "DENSE_LIMIT", 0)
    sparse = eigengap_k(neighbors, 2, 6)
    assert sparse.k == dense.k == 3
    np.testing.assert_allclose(sparse.eigenvalues, dense.eigenvalues, atol=1e-6)


def test_eigengap_refuses_an_impossible_range():
    with pytest.raises(ValueError, match="k_min <= k_max"):
        eigengap_k(torch.zeros(5, 2, dtype=torch.long), 4, 3)


@pytest.mark.slow
def test_k_auto_flows_through_the_whole_method(compose_cfg):
    """``K=auto`` on the synthetic method: the curve is written and logged, the chosen K is the
    eigengap's on the mined neighbours, SCAN trains that many clusters and scoring follows."""
    cfg = compose_cfg(
        "+experiment=ours_synthetic",
        "logger=csv",
        "callbacks=none",
        "stage1=frozen_features",
        "K=auto",
        "pseudo_labels.auto_k.k_max=6",
        "stage1.mining.num_neighbors=5",
        "stage1.collapse.max_cluster_share=1.0",
        "stage1.collapse.max_empty_fraction=1.0",
        "stage1.selflabel.module.threshold=0.3",
        "stage1.scan.epochs=3",
        "stage1.selflabel.epochs=2",
        "finetune.epochs=3",  # a third epoch: two may not beat the majority pseudo-class
        "plots.auto_k=true",  # any plots override keeps the other figures: two slow ones off
        "plots.embedding=false",
        "plots.retrieval=false",
    )
    metrics = run(cfg)
    output = Path(cfg.paths.output_dir)
    mining = next(Path(cfg.paths.artifact_dir).glob("mining-*[!k]"))
    expected = eigengap_k(load_artifact(mining / "neighbors.pt"), 2, 6).k
    assert metrics["auto_k/K"] == expected and cfg.K == expected
    assert (output / "plots" / "auto_k.png").stat().st_size > 1000
    assert OmegaConf.load(output / "config_resolved.yaml").K == expected
    scan = next(Path(cfg.paths.artifact_dir).glob("scan-*[!k]"))
    assert load_artifact(scan / "scan.pt")["heads.0.weight"].shape[0] == expected
    assert any(key.startswith("ood/") for key in metrics)


# -- scan_imagenet: the official ImageNet-50 values ----------------------------------------------
def test_scan_imagenet_is_the_official_imagenet_50_recipe(compose_cfg):
    """Every value against wvangansbeke/Unsupervised-Classification (commit 57dff92):
    configs/scan/scan_imagenet_50.yml, configs/selflabel/selflabel_imagenet_50.yml and moco.py
    (MoCo v2 800-epoch checkpoint, neighbours mined before the MLP, topk 50, faiss topk + 1)."""
    cfg = compose_cfg("+experiment=imagenet30_clip")
    clustering = cfg.stage1
    assert cfg.K == 10
    assert clustering.pretext._target_ == "ood_nolabels.models.moco.MocoV2ResNet50Backbone"
    assert clustering.pretext.url == moco.MOCO_V2_URL
    assert moco.MOCO_V2_URL.endswith("moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar")
    assert clustering.pretext.image_size == 224 and not clustering.on_features
    mining = clustering.mining
    assert (mining.num_neighbors, mining.features, mining.include_self) == (50, "backbone", True)
    scan = clustering.scan  # scan_imagenet_50.yml
    assert scan.module.num_heads == 10 and scan.module.entropy_weight == 5.0
    assert scan.module.update_backbone is False  # update_cluster_head_only: True
    assert scan.optimizer._target_ == "torch.optim.SGD"
    assert (scan.optimizer.lr, scan.optimizer.momentum, scan.optimizer.weight_decay) == (
        5.0,
        0.9,
        0,
    )
    assert scan.optimizer.nesterov is False and scan.scheduler is None  # constant
    assert (scan.epochs, scan.batch_size) == (100, 512)
    augment = scan.augment  # augmentation_strategy: simclr
    assert augment._target_ == "ood_nolabels.data.augment.simclr_transform"
    assert tuple(augment.crop_scale) == (0.2, 1.0) and tuple(augment.jitter) == (0.4, 0.4, 0.4, 0.1)
    assert (augment.jitter_p, augment.grayscale_p, augment.hflip) == (0.8, 0.2, True)
    selflabel = clustering.selflabel  # selflabel_imagenet_50.yml
    assert selflabel.ema_decay == 0.999 and selflabel.module.threshold == 0.99
    assert selflabel.module.class_balance is False
    assert selflabel.optimizer._target_ == "torch.optim.SGD"
    optimizer = selflabel.optimizer
    assert (optimizer.lr, optimizer.momentum, optimizer.weight_decay) == (0.03, 0.9, 0)
    assert optimizer.nesterov is False and selflabel.scheduler is None
    assert (selflabel.epochs, selflabel.batch_size) == (25, 512)
    strong = selflabel.strong_augment  # augmentation_strategy: ours
    assert strong._target_ == "ood_nolabels.data.augment.scan_strong_transform"
    assert (strong.num_ops, strong.cutout_length, strong.resize) == (4, 75, 256)
    assert selflabel.weak_augment is None  # the 'standard' (validation) view


def test_imagenet_strong_view_crops_224_of_256_and_cuts_up_to_75_px():
    """'ours' at crop_size 224 of the official ImageNet dataset: Resize(256), flip, RandomCrop(224),
    4 ops, normalise, Cutout(n_holes=1, length=75, random=True)."""
    transform = scan_strong_transform(224, (0.5,) * 3, (0.5,) * 3, cutout_length=75, resize=256)
    steps = {type(step).__name__: step for step in transform.transforms}
    assert steps["Resize"].size == 256 and steps["RandomCrop"].size == (224, 224)
    assert steps["ScanAugment"].num_ops == 4
    cutout = transform.transforms[-1]
    assert isinstance(cutout, Cutout) and (cutout.size, cutout.random_size) == (75, True)
    image = Image.fromarray(np.full((300, 400, 3), 200, dtype=np.uint8))
    assert transform(image).shape == (3, 224, 224)
    default = scan_strong_transform(32, (0.5,) * 3, (0.5,) * 3)  # CIFAR: unchanged, 16 px
    assert default.transforms[-1].size == 16


# -- MoCo v2 weights -----------------------------------------------------------------------------
def fake_moco_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    encoder = resnet50(weights=None)
    state = {f"module.encoder_q.{k}": v for k, v in encoder.state_dict().items() if "fc" not in k}
    state |= {
        "module.encoder_q.fc.0.weight": torch.randn(2048, 2048),
        "module.encoder_q.fc.0.bias": torch.randn(2048),
        "module.encoder_q.fc.2.weight": torch.randn(128, 2048),
        "module.encoder_q.fc.2.bias": torch.randn(128),
        "module.encoder_k.conv1.weight": torch.randn(64, 3, 7, 7),  # the key encoder: ignored
    }
    torch.save({"state_dict": state, "epoch": 800}, path)
    return state


@pytest.mark.slow
def test_moco_backbone_loads_the_query_encoder_from_a_local_file(tmp_path):
    path = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    state = fake_moco_checkpoint(path)
    backbone = moco.MocoV2ResNet50Backbone(checkpoint_path=str(path))
    loaded = backbone.model.state_dict()
    for name, value in loaded.items():
        assert torch.equal(value, state[f"module.encoder_q.{name}"]), name
    assert backbone.feature_dim == 2048 and backbone.crop_pct == 224 / 256
    assert backbone.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 2048)


def test_moco_offline_without_the_file_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(moco, "hub_reachable", lambda: False)
    monkeypatch.setattr(moco, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(
        FileNotFoundError, match=r"moco_v2_800ep_pretrain\.pth\.tar.*checkpoint_path"
    ):
        moco.MocoV2ResNet50Backbone()


def test_not_a_moco_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="not a MoCo checkpoint"):
        moco.MocoV2ResNet50Backbone(checkpoint_path=str(path))


@pytest.mark.slow
def test_frozen_features_benchmark_runs_on_cpu_with_tiny_sizes(monkeypatch, capsys):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "frozen_features.py"
    argv = [str(script), "--backbone", "efficientnet_lite0", "--images", "48"]
    monkeypatch.setattr("sys.argv", [*argv, "--image-size", "32", "--device", "cpu"])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "features (48, 1280)" in out and "projected stage 1 (full recipe)" in out
