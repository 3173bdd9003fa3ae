"""Training keys: an fp32 cache never serves a bf16 run, nor a one-process cache a two-process
run.
"""

import pytest

from ood_nolabels.engine.runtime import training_key
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
