"""The console: the progress bar names the stage, libraries stay quiet."""

import logging

import torch

from ood_nolabels.engine.console import StageProgressBar, quiet_libraries


def test_progress_bar_names_the_stage_and_the_epoch():
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(L.LightningModule):
        stage_name = "simclr"

        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    bar = StageProgressBar(leave=True)
    descriptions = []

    class Spy(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            descriptions.append(bar.train_progress_bar.desc)

    trainer = L.Trainer(
        max_epochs=2, callbacks=[bar, Spy()], logger=False, enable_checkpointing=False
    )
    trainer.fit(Tiny(), DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=2))
    assert [d.rstrip(": ") for d in descriptions] == ["simclr 1/2", "simclr 2/2"]


def test_libraries_are_quiet_unless_verbose():
    quiet_libraries(verbose=False)
    assert logging.getLogger("faiss.loader").getEffectiveLevel() == logging.WARNING
    assert not logging.getLogger("lightning.pytorch.utilities.rank_zero").isEnabledFor(logging.INFO)
    quiet_libraries(verbose=True)
    assert logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)
    quiet_libraries(verbose=False)
