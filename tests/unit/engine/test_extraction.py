"""Feature extraction: exact, ordered, and identical under 2-process CPU DDP."""

from pathlib import Path

import pytest
import torch
from helpers import conv_backbone, quiet_trainer

from ood_nolabels.data.datamodule import OODDataModule
from ood_nolabels.data.synthetic import SyntheticSource
from ood_nolabels.engine.extraction import FeatureExtractor
from ood_nolabels.models.backbones import Backbone


class SavingExtractor(FeatureExtractor):
    """Writes the gathered features from rank 0 (ddp_spawn returns nothing else)."""

    def __init__(self, backbone: Backbone, split_names: list[str], path: str) -> None:
        super().__init__(backbone, split_names)
        self.path = path

    def on_features(self, features: dict[str, torch.Tensor]) -> None:
        if self.trainer.is_global_zero:
            torch.save(features, self.path)


def extract(tmp_path: Path, **trainer_kwargs) -> dict[str, torch.Tensor]:
    # 19 and 7 images over 2 ranks and batches of 4: the sampler pads, batches are ragged.
    dm = OODDataModule(
        SyntheticSource(classes=[0, 1, 2], per_class=7, seed=3),
        {"ood": SyntheticSource(classes=[5], per_class=7)},
        batch_size=4,
    )
    backbone = conv_backbone()
    loaders = dm.eval_loaders(backbone.transform())
    path = tmp_path / f"features_{trainer_kwargs.get('devices', 1)}.pt"
    trainer = quiet_trainer(default_root_dir=tmp_path, **trainer_kwargs)
    trainer.test(
        SavingExtractor(backbone, list(loaders), str(path)), list(loaders.values()), verbose=False
    )
    return torch.load(path)


def test_single_process_features_match_direct_forward(tmp_path):
    features = extract(tmp_path, devices=1)
    dm = OODDataModule(
        SyntheticSource(classes=[0, 1, 2], per_class=7, seed=3), {"o": SyntheticSource()}
    )
    backbone = conv_backbone().eval()
    transform = backbone.transform()
    dm.setup()
    images = dm.images["normal_train"]
    with torch.no_grad():
        direct = backbone(torch.stack([transform(images.get_image(i)) for i in range(len(images))]))
    assert features["normal_train"].shape == (21, 24)
    torch.testing.assert_close(features["normal_train"], direct, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_two_process_ddp_gives_the_same_features(tmp_path):
    single = extract(tmp_path, devices=1)
    ddp = extract(tmp_path, devices=2, strategy="ddp_spawn")
    assert set(ddp) == set(single)
    for split in single:
        assert ddp[split].shape == single[split].shape, split
        torch.testing.assert_close(ddp[split], single[split], rtol=1e-5, atol=1e-5)
