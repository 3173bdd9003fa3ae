"""Every config group option and every experiment composes; cheap objects instantiate."""

from pathlib import Path

import lightning as L
import pytest
from hydra.errors import MissingConfigException
from hydra.utils import instantiate

from ood_nolabels.data.images import ImageSource
from ood_nolabels.scoring.base import Scorer

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["dataset", "ood", "backbone", "scorer", "trainer", "logger", "callbacks"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda v: str(v)
)
def test_every_group_option_composes(compose_cfg, group, option):
    cfg = compose_cfg(f"{group}={option}")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if group == "dataset":
        assert isinstance(instantiate(cfg.dataset), ImageSource)
    if group == "ood" and option in ("digits", "synthetic"):
        assert all(isinstance(s, ImageSource) for s in instantiate(cfg.ood).values())
    if group == "scorer":
        assert all(isinstance(instantiate(s), Scorer) for s in cfg.scorer.values())


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(compose_cfg, experiment):
    cfg = compose_cfg(f"+experiment={experiment}")
    assert cfg.task_name == experiment
    assert cfg.backbone._target_.startswith("ood_nolabels.models.")
    assert len(cfg.ood) >= 1 and len(cfg.scorer) >= 1


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


def test_digits_experiment_defaults(compose_cfg):
    cfg = compose_cfg("+experiment=digits_dn2")
    assert list(cfg.dataset.classes) == [0, 1, 2, 3, 4, 5]
    assert list(cfg.ood.digits_6_9.classes) == [6, 7, 8, 9]
    assert set(cfg.scorer) == {"knn", "mahalanobis"} and cfg.scorer.knn.k == 1


def test_unknown_option_lists_the_available_ones(compose_cfg):
    with pytest.raises(MissingConfigException, match="efficientnet_lite0"):
        compose_cfg("backbone=resnet_9000")
