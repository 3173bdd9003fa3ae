"""Every config group option and every experiment composes; cheap objects instantiate; the
presets hold the official SCAN recipes and the paper's values; every data config
instantiates and finds its files.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
from helpers import write_cifar, write_image
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision.datasets import CIFAR10

from ood_nolabels.data.folders import FolderSource
from ood_nolabels.data.images import ImageSource
from ood_nolabels.engine.runtime import training_key
from ood_nolabels.methods.base import Method
from ood_nolabels.methods.pipelines.recipes import check_stage_modules
from ood_nolabels.methods.pseudo_labels.base import PseudoLabelSource
from ood_nolabels.models import moco
from ood_nolabels.scorers.base import Scorer

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = [
    "dataset",
    "ood",
    "backbone",
    "scorer",
    "method",
    "stage1",
    "pseudo_labels",
    "finetune",
    "trainer",
    "logger",
    "callbacks",
]
# What each group needs beside it to compose and build (the method that loads it).
CONTEXT = {"pseudo_labels": ("method=finetune",), "finetune": ("method=finetune",)}
FAST = ("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda v: str(v)
)
def test_every_group_option_composes(compose_cfg, group, option):
    cfg = compose_cfg(*CONTEXT.get(group, ()), f"{group}={option}")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if group == "dataset":
        assert isinstance(instantiate(cfg.dataset), ImageSource)
    if group == "ood" and option in ("digits", "synthetic"):
        assert all(isinstance(s, ImageSource) for s in instantiate(cfg.ood).values())
    if group == "scorer":
        assert all(isinstance(instantiate(s), Scorer) for s in cfg.scorer.values())
    if group == "method":
        assert isinstance(instantiate(cfg.method), Method)
    if group == "backbone" and option.startswith("efficientnet_lite"):  # offline weights
        assert instantiate(cfg.backbone).feature_dim == 1280
    if group == "pseudo_labels":
        assert isinstance(instantiate(cfg.pseudo_labels), PseudoLabelSource)
    if group == "stage1":
        check_stage_modules(cfg.stage1)
        simclr = cfg.stage1.get("simclr")
        if simclr is None:  # a pretrained pretext (not built here: it may need downloads)
            stats = dict(image_size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
            assert cfg.stage1.pretext._target_.startswith("ood_nolabels.models.")
        else:
            backbone = instantiate(simclr.backbone)
            stats = dict(image_size=backbone.image_size, mean=backbone.mean, std=backbone.std)
        for augment in (
            simclr.augment if simclr else None,
            cfg.stage1.scan.augment,
            cfg.stage1.selflabel.weak_augment,
            cfg.stage1.selflabel.strong_augment,
        ):
            # None: no augmentation (the backbone's own preprocessing, or cached features)
            assert augment is None or callable(instantiate(augment)(**stats))


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(compose_cfg, experiment):
    cfg = compose_cfg(f"+experiment={experiment}")
    assert cfg.task_name == experiment
    assert isinstance(instantiate(cfg.method), Method)
    backbone, scorer, stage1 = cfg.get("backbone"), cfg.get("scorer"), cfg.get("stage1")
    assert backbone is None or backbone._target_.startswith("ood_nolabels.models.")
    assert len(cfg.ood) >= 1 and (scorer is None or len(scorer) >= 1)
    if stage1 is not None:
        check_stage_modules(stage1)  # every module key is an argument of its stage's module


@pytest.mark.parametrize("trainer", ["cpu", "ddp_cpu"])
def test_cpu_trainers_instantiate(compose_cfg, trainer):
    cfg = compose_cfg(f"trainer={trainer}")
    built = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert isinstance(built, L.Trainer)
    assert built.precision == "32-true"


def test_gpu_trainers_use_mixed_precision(compose_cfg):
    assert compose_cfg("trainer=gpu").trainer.precision == "bf16-mixed"
    ddp = compose_cfg("trainer=ddp").trainer
    assert ddp.strategy == "ddp" and ddp.precision == "bf16-mixed"


@pytest.mark.parametrize(
    "trainer,workers,pinned", [("cpu", 0, False), ("gpu", 8, True), ("ddp_multinode", 8, True)]
)
def test_the_trainer_group_chooses_the_data_loaders(compose_cfg, trainer, workers, pinned):
    cfg = compose_cfg(f"trainer={trainer}")
    data = instantiate(cfg.data)
    loader = data.loader("normal_test", lambda image: 0)
    assert (loader.num_workers, loader.pin_memory) == (workers, pinned)
    assert loader.persistent_workers == (workers > 0)


def test_multinode_launcher_is_sized_from_the_trainer():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            ["trainer=ddp_multinode", "hydra/launcher=slurm", "trainer.num_nodes=3"],
            return_hydra_config=True,
        )
    assert (cfg.hydra.launcher.nodes, cfg.hydra.launcher.tasks_per_node) == (3, 8)
    assert cfg.hydra.launcher.gpus_per_node == cfg.trainer.devices == 8
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.precision == "bf16-mixed"
    GlobalHydra.instance().clear()


def test_digits_experiment_defaults(compose_cfg):
    cfg = compose_cfg("+experiment=dn2_digits")
    assert list(cfg.dataset.classes) == [0, 1, 2, 3, 4, 5]
    assert list(cfg.ood.digits_6_9.classes) == [6, 7, 8, 9]
    assert set(cfg.scorer) == {"knn", "mahalanobis"} and cfg.scorer.knn.k == 1


def test_unknown_option_lists_the_available_ones(compose_cfg):
    with pytest.raises(MissingConfigException, match="efficientnet_lite0"):
        compose_cfg("backbone=resnet_9000")


def test_cifar10_stage1_preset_is_the_official_scan_recipe(compose_cfg):
    cfg = compose_cfg("+experiment=stage1_cifar10")
    assert cfg.K == 10 and cfg.dataset._target_.endswith("CIFAR10Source")
    simclr, scan, selflabel = cfg.stage1.simclr, cfg.stage1.scan, cfg.stage1.selflabel
    assert simclr.backbone._target_.endswith("CifarResNet18Backbone")
    assert (simclr.epochs, simclr.batch_size, simclr.module.temperature) == (500, 512, 0.1)
    assert (simclr.module.hidden_dim, simclr.module.projection_dim) == (512, 128)
    assert simclr.optimizer._target_ == "torch.optim.SGD"
    assert (simclr.optimizer.lr, simclr.optimizer.momentum) == (0.4, 0.9)
    assert simclr.optimizer.weight_decay == 1e-4
    assert simclr.scheduler.T_max == 500 and simclr.scheduler.eta_min == pytest.approx(0.4e-3)
    assert tuple(simclr.augment.crop_scale) == (0.2, 1.0) and simclr.augment.jitter_p == 0.8
    assert tuple(simclr.augment.jitter) == (0.4, 0.4, 0.4, 0.1)
    assert simclr.augment.grayscale_p == 0.2
    assert cfg.stage1.mining.num_neighbors == 20
    assert (scan.epochs, scan.batch_size, scan.module.entropy_weight) == (50, 128, 5.0)
    assert scan.optimizer._target_ == "torch.optim.Adam"
    assert (scan.optimizer.lr, scan.optimizer.weight_decay) == (1e-4, 1e-4)
    assert scan.augment.num_ops == 4 and scan.augment.cutout_fraction == 0.5
    assert (selflabel.epochs, selflabel.batch_size) == (200, 1000)
    assert selflabel.module.threshold == 0.99 and selflabel.module.class_balance
    assert selflabel.module.get("min_cluster_fraction", 0.0) == 0.0  # the threshold alone
    assert (selflabel.optimizer.lr, selflabel.optimizer.weight_decay) == (1e-4, 1e-4)


@pytest.mark.parametrize(
    "experiment,backbone",
    [
        ("cifar10_vit", "vit_base_patch16_224.augreg_in21k"),
        ("cifar10_resnet152", "resnet152.tv_in1k"),
        ("cifar10_resnet18", "resnet18.tv_in1k"),
        ("imagenet30_clip", "ViT-B-16"),
    ],
)
def test_paper_presets_use_the_paper_finetuning(compose_cfg, experiment, backbone):
    cfg = compose_cfg(f"+experiment={experiment}")
    assert cfg.backbone.name == backbone
    assert cfg.method._target_ == "ood_nolabels.methods.finetune.PseudoLabelFinetune"
    assert cfg.pseudo_labels._target_.endswith("stage1_clusters.Stage1Clusters")
    finetune = cfg.finetune
    assert finetune.epochs == 5 and finetune.optimizer._target_ == "torch.optim.Adam"
    assert finetune.optimizer.lr == 1e-5 and finetune.scheduler.eta_min == 1e-6
    assert finetune.scheduler._target_ == "ood_nolabels.modules.base.cosine_per_step"
    assert cfg.scorer.knn.k == 1 and "mahalanobis" in cfg.scorer
    assert cfg.trainer.precision == "bf16-mixed"
    expected_ood = (
        {"cifar100", "svhn", "lsun", "lsun_fix"}
        if "cifar" in experiment
        else {"cub200", "dogs", "pets", "flowers102", "food101", "places365", "caltech256"}
    )
    assert set(cfg.ood) == expected_ood
    assert cfg.K == 10  # the paper uses K=10 for every dataset (ImageNet-30 included)


def test_dn2_composes_no_clustering_or_finetune_recipe(compose_cfg):
    cfg = compose_cfg("+experiment=dn2_digits")
    assert all(cfg.get(group) is None for group in ("stage1", "pseudo_labels", "finetune"))
    assert "K" not in cfg  # no method that clusters: K would be meaningless
    ours = compose_cfg("+experiment=digits")
    assert ours.K == 6 and ours.stage1.simclr.epochs == 60


def test_debug_makes_any_preset_tiny_and_keys_its_artifacts_apart(compose_cfg):
    assert training_key(compose_cfg("+experiment=digits").trainer) == {}
    tiny = compose_cfg("+experiment=digits", "+debug=tiny")
    assert training_key(tiny.trainer) == {"max_epochs": 2, "limit_train_batches": 3}
    assert not any(value for value in tiny.plots.values() if isinstance(value, bool))
    bf16 = compose_cfg("+experiment=digits", "trainer.precision=bf16-mixed")
    assert training_key(bf16.trainer) == {"precision": "bf16-mixed"}


def test_the_stage_1_recipe_is_a_short_composition(compose_cfg):
    """Each digits stage-1 value is found in the stage's own file (plus the shared optimizer or
    augmentation file it mounts), and the recipe only composes them (plus the one choice that
    spans two stages: whose clusters to keep)."""
    cfg = compose_cfg("+experiment=digits")
    recipe = OmegaConf.load(CONF / "stage1" / "digits.yaml")
    assert set(recipe) == {"defaults", "keep_better_clustering"}
    scan = OmegaConf.load(CONF / "stage1" / "scan" / "digits.yaml")
    assert cfg.stage1.scan.optimizer.lr == scan.optimizer.lr == 1e-3
    assert cfg.stage1.scan.optimizer._target_ == "torch.optim.Adam"
    assert cfg.stage1.scan.augment == cfg.stage1.selflabel.strong_augment  # one shared file


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


def test_scan_cifar10_trains_one_head(scan_cifar10):
    """configs/scan/scan_cifar10.yml: ``num_heads: 1``."""
    cfg, _, _ = scan_cifar10
    assert cfg.scan.module.num_heads == 1


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


# -- the data configs ----------------------------------------------------------------------------


def instantiate_file(path: Path, data_dir: Path):
    """The config file built as a run would, beside the data set of the same name (which an OOD
    config may refer to, e.g. for the classes it holds out)."""
    config = OmegaConf.create({"paths": {"data_dir": str(data_dir)}, "item": OmegaConf.load(path)})
    dataset = CONF / "dataset" / path.name
    if dataset.is_file():
        config.dataset = OmegaConf.load(dataset)
    return instantiate(config.item)


@pytest.mark.parametrize("path", sorted((CONF / "dataset").glob("*.yaml")), ids=lambda p: p.stem)
def test_dataset_configs_instantiate(tmp_path, path):
    assert isinstance(instantiate_file(path, tmp_path), ImageSource)


@pytest.mark.parametrize("path", sorted((CONF / "ood").glob("*.yaml")), ids=lambda p: p.stem)
def test_ood_configs_name_test_folders(tmp_path, path):
    """Every OOD entry loads its test split from the folder its config and layout name."""
    for name, source in instantiate_file(path, tmp_path).items():
        assert isinstance(source, ImageSource), name
        if isinstance(source, FolderSource):
            assert source.dirs["train"] is None
            assert source.dirs["test"] == "." or source.dirs["test"] in source.layout
            write_image(source.root / source.dirs["test"] / "x" / "img.jpg")
            assert len(source.load("test")) == 1


def test_cifar10_config_reads_data_dir(tmp_path, monkeypatch):
    expected = write_cifar(tmp_path / "cifar10", CIFAR10, monkeypatch)
    images = instantiate_file(CONF / "dataset" / "cifar10.yaml", tmp_path).load("test")
    assert np.array_equal(images.images, expected["test"][0])
