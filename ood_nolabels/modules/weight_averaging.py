"""The paper's weight averaging: the equal mean of the weights at the end of every epoch."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.utilities import rank_zero_only

from ood_nolabels.core.atomic import atomic_save, check_finite


class EpochWeightAveraging(WeightAveraging):
    """Lightning's ``WeightAveraging`` updated once per epoch end, never per step.

    With the default averaging function (an equal running mean) the weights left in the model
    after training are the arithmetic mean of the end-of-epoch weights; BatchNorm buffers are
    averaged too (``use_buffers=True``).
    """

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return epoch_idx is not None


class EpochSnapshots(L.Callback):
    """Saves the backbone's weights at every epoch end, so each epoch's model can be scored.

    Each file is written whole (temporary name, then a rename) and never holds NaN or inf."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, epoch: int) -> Path:
        return self.directory / f"epoch_{epoch}.pt"

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.backbone.state_dict().items()}
        path = self.path(trainer.current_epoch)
        check_finite(state, path)
        atomic_save(state, path)
