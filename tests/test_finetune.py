"""Pseudo-label finetuning: weight averaging, BatchNorm handling, label validation."""

import pytest
import torch
from helpers import conv_backbone, quiet_trainer
from torch.utils.data import DataLoader

from ood_nolabels.models.backbones import Backbone
from ood_nolabels.modules.finetune import FinetuneModule
from ood_nolabels.modules.weight_averaging import EpochSnapshots, EpochWeightAveraging


def bn_backbone() -> Backbone:
    return conv_backbone(image_size=6, channels=4, pool=1, batchnorm=True)


def adam(params):
    return torch.optim.Adam(params, lr=0.05)


def data(n: int = 24) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, 6, 6, generator=generator) * 2 + 1
    return DataLoader([(images[i], i) for i in range(n)], batch_size=8, shuffle=True)


def fit(module, callbacks, epochs=3, tmp_path=None):
    quiet_trainer(max_epochs=epochs, callbacks=callbacks, default_root_dir=tmp_path).fit(
        module, data()
    )


def test_averaged_weights_are_the_mean_of_the_epoch_end_weights(tmp_path):
    labels = torch.arange(24) % 3
    module = FinetuneModule(bn_backbone(), labels, 3, optimizer=adam, freeze_bn_stats=False)
    snapshots = EpochSnapshots(tmp_path / "epochs")
    fit(module, [EpochWeightAveraging(), snapshots], epochs=3, tmp_path=tmp_path)
    epochs = [torch.load(snapshots.path(e)) for e in range(3)]
    assert not torch.equal(epochs[0]["model.0.weight"], epochs[2]["model.0.weight"])
    averaged = module.backbone.state_dict()
    for name, value in averaged.items():
        if value.is_floating_point():
            mean = torch.stack([epoch[name] for epoch in epochs]).mean(0)
            torch.testing.assert_close(value, mean, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("freeze", [True, False])
def test_batchnorm_statistics_frozen_or_updated(freeze):
    module = FinetuneModule(
        bn_backbone(),
        torch.zeros(24).long() + torch.arange(24) % 2,
        2,
        optimizer=adam,
        freeze_bn_stats=freeze,
    )
    before = module.backbone.model[1].running_mean.clone()
    fit(module, [], epochs=1)
    after = module.backbone.model[1].running_mean
    assert torch.equal(before, after) == freeze
    assert not torch.equal(module.backbone.model[0].weight, bn_backbone().model[0].weight)


def test_labels_outside_k_are_rejected():
    with pytest.raises(ValueError, match="K=3"):
        FinetuneModule(bn_backbone(), torch.tensor([0, 1, 3]), 3, optimizer=adam)
