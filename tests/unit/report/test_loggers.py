"""W&B run identity: a single run is named after its task, a sweep job after the swept values."""

import yaml

from ood_nolabels.report.loggers import job_identity, swept_values


def test_job_identity_outside_hydra_is_the_task_name():
    identity = job_identity("digits", ["ours"])
    assert (identity.name, identity.group, identity.tags) == ("digits", "digits", ["ours"])


def test_a_sweep_job_is_named_after_the_values_the_sweep_varies(tmp_path):
    sweep = ["+experiment=digits", "scorer=knn,mahalanobis", "K=4,6", "logger=csv", "seed=1"]
    (tmp_path / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"overrides": {"task": sweep}}})
    )
    job = ["+experiment=digits", "scorer=mahalanobis", "K=6", "logger=csv", "seed=1"]
    assert swept_values(job, tmp_path) == "K=6,scorer=mahalanobis"
    assert swept_values(job, tmp_path / "elsewhere") is None  # no sweep file: Hydra's default
