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


def test_trainable_prefixes_leave_every_other_parameter_at_its_pretrained_value():
    module = FinetuneModule(
        bn_backbone(), torch.arange(24) % 3, 3, optimizer=adam, trainable=["model.1."]
    )
    pretrained = bn_backbone()
    fit(module, [], epochs=1)
    assert torch.equal(module.backbone.model[0].weight, pretrained.model[0].weight)  # frozen
    assert not torch.equal(module.backbone.model[1].weight, pretrained.model[1].weight)  # BN
    with pytest.raises(ValueError, match=r"finetune.trainable: \['blocks.9'\] match no backbone"):
        FinetuneModule(
            bn_backbone(), torch.arange(24) % 3, 3, optimizer=adam, trainable=["blocks.9"]
        )


def test_the_elastic_pull_is_l2_sp_and_keeps_the_weights_near_the_pretrained_ones():
    labels = torch.arange(24) % 3
    module = FinetuneModule(bn_backbone(), labels, 3, optimizer=adam, elastic_weight=2.0)
    with torch.no_grad():
        for parameter in module.backbone.parameters():
            parameter.add_(0.5)
    expected = sum(0.25 * p.numel() for p in module.backbone.parameters()) / 2
    assert module.elastic_penalty().item() == pytest.approx(expected, rel=1e-5)

    def drift(weight: float) -> float:
        torch.manual_seed(0)
        module = FinetuneModule(bn_backbone(), labels, 3, optimizer=adam, elastic_weight=weight)
        fit(module, [], epochs=2)
        pairs = zip(module.backbone.parameters(), bn_backbone().parameters(), strict=True)
        return sum(float((p - q).square().sum()) for p, q in pairs)

    assert drift(100.0) < 0.5 * drift(0.0)


def test_feature_distillation_is_the_cosine_distance_to_the_pretrained_features(monkeypatch):
    labels = torch.arange(24) % 3
    module = FinetuneModule(bn_backbone(), labels, 3, optimizer=adam, distill_weight=3.0)
    assert "teacher" not in dict(module.named_modules())  # not trained, averaged nor saved
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **_: logged.setdefault(name, value))
    images, indices = next(iter(data()))
    module.on_train_epoch_start()
    with torch.no_grad():
        module.backbone.model[0].weight.mul_(-1)  # the student drifts
        features, reference = module.backbone(images), module.teacher(images)
        cross_entropy = torch.nn.functional.cross_entropy(module.head(features), labels[indices])
        cosine = (features * reference).sum(1) / (features.norm(dim=1) * reference.norm(dim=1))
        loss = module.training_step((images, indices), 0)
    drift = (1 - cosine).mean()
    assert logged["finetune/feature_drift"].item() == pytest.approx(drift.item(), rel=1e-5)
    assert loss.item() == pytest.approx((cross_entropy + 3.0 * drift).item(), rel=1e-5)
