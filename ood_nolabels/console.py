"""What a run prints: named progress bars, quiet libraries, and a timing summary at the end."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from ood_nolabels.reporting import markdown_table

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


@dataclass
class Timings:
    """Wall time of each step of a run (stages, evaluations), printed as a table at the end."""

    rows: list[tuple[str, str, float]] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)

    def add(self, step: str, outcome: str, seconds: float) -> None:
        self.rows.append((step, outcome, seconds))

    @contextmanager
    def measure(self, step: str, outcome: str) -> Iterator[None]:
        """Time the ``with`` block as one row."""
        start = time.perf_counter()
        yield
        self.add(step, outcome, time.perf_counter() - start)

    def table(self) -> str:
        total = time.perf_counter() - self.start
        rows = [[step, outcome, f"{seconds:.1f}"] for step, outcome, seconds in self.rows]
        return markdown_table(
            ["step", "outcome", "seconds"], [*rows, ["total", "", f"{total:.1f}"]]
        )
