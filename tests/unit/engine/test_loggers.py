"""The stage-aware W&B step axis."""

from ood_nolabels.engine.loggers import StagedWandbLogger


class RecordingRun:
    """Stands in for a W&B run: keeps what the logger sends."""

    def __init__(self):
        self.logged, self.defined = [], []

    def log(self, payload):
        self.logged.append(payload)

    def define_metric(self, name, **kwargs):
        self.defined.append((name, kwargs.get("step_metric")))


def test_stages_log_on_one_increasing_axis_and_their_own_step(tmp_path):
    logger = StagedWandbLogger(project="p", save_dir=str(tmp_path), offline=True)
    logger._experiment = RecordingRun()
    logger.start_stage("simclr")
    for step in range(3):
        logger.log_metrics({"simclr/train_loss": 1.0}, step=step)
    logger.start_stage("scan")
    logger.log_metrics({"scan/train_loss": 2.0}, step=0)
    logger.log_metrics({"cluster/acc": 0.9})  # outside a fit: no step

    logged = logger._experiment.logged
    assert [p.get("trainer/global_step") for p in logged] == [0, 1, 2, 3, None]
    assert logged[3]["scan/step"] == 0 and logged[2]["simclr/step"] == 2
    assert ("scan/*", "scan/step") in logger._experiment.defined
    assert ("ood_epoch/*", "epoch") in logger._experiment.defined
