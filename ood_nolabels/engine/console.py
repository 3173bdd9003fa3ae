"""What a run prints while it works: progress bars named after the stage, quiet libraries."""

from __future__ import annotations

import logging
import warnings

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

# Info-level chatter of the libraries: "GPU available ...", Lightning's tip banners, faiss's
# "Loading faiss with AVX2 support". Warnings and errors still come through.
CHATTY_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
    "faiss.loader",
)


# Warnings that repeat at every stage and ask nothing of the user: Lightning's use of a
# deprecated torch pytree API, and its advice to add loader workers (set by `data.num_workers`).
REPEATED_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)", r".*does not have many workers")


def quiet_libraries(verbose: bool = False) -> None:
    """Silence the libraries' info banners and repeated warnings unless ``verbose`` (the
    ``verbose=true`` override)."""
    level = logging.INFO if verbose else logging.WARNING
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    for message in REPEATED_WARNINGS:
        warnings.filterwarnings("default" if verbose else "ignore", message=message)


class StageProgressBar(TQDMProgressBar):
    """Bars that say what runs: ``simclr 3/100`` while training, ``features normal_test``
    while extracting, instead of ``Epoch 2`` and ``Testing DataLoader 1``."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        stage = getattr(trainer.lightning_module, "stage_name", "train")
        self.train_progress_bar.set_description(
            f"{stage} {trainer.current_epoch + 1}/{trainer.max_epochs}"
        )

    def on_test_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx, dataloader_idx=0
    ) -> None:
        super().on_test_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        names = getattr(pl_module, "split_names", None)
        if names and batch_idx == 0:
            self.test_progress_bar.set_description(f"features {names[dataloader_idx]}")
