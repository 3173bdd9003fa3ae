"""The cached-stage helper: atomic artifacts, corruption recovery, per-stage seeds, storage
errors (two processes on one stage: tests/e2e/test_artifact_locking.py).
"""

import json
from pathlib import Path

import pytest
import torch

from ood_nolabels.engine.artifacts import (
    ArtifactStore,
    UnreadableArtifact,
    load_artifact,
    load_rows,
    save_artifact,
)


def random_artifact(work_dir: Path) -> dict:
    save_artifact(torch.randn(5), work_dir / "weights.pt")
    return {"quality": 1.0}


def load_weights(directory: Path) -> torch.Tensor:
    return load_artifact(directory / "weights.pt")


def test_stage_trains_once_then_loads_and_records_metrics(tmp_path):
    calls = []

    def train(work_dir: Path) -> dict:
        calls.append(work_dir)
        return random_artifact(work_dir)

    first = ArtifactStore(tmp_path).stage("demo", {"lr": 0.1})
    weights = first.run(train, load_weights)
    second = ArtifactStore(tmp_path).stage("demo", {"lr": 0.1})
    assert torch.equal(second.run(train, load_weights), weights)
    assert (first.outcome, second.outcome, len(calls)) == ("trained", "reused", 1)
    assert second.metrics == {"quality": 1.0}
    assert calls[0].name.endswith(".partial") and not calls[0].exists()  # renamed into place
    assert json.loads((second.directory / "stage.json").read_text())["seed"] == second.seed


def test_a_stage_seed_depends_on_its_key_only(tmp_path):
    """Whatever ran before in the process, a stage draws the same random numbers."""
    store = ArtifactStore(tmp_path / "a", seed=3)
    expected = store.stage("demo", 1).run(random_artifact, load_weights)
    torch.rand(100)  # another stage's randomness before this one
    again = (
        ArtifactStore(tmp_path / "b", seed=3).stage("demo", 1).run(random_artifact, load_weights)
    )
    other_seed = ArtifactStore(tmp_path / "c", seed=4).stage("demo", 1)
    assert torch.equal(expected, again)
    assert not torch.equal(expected, other_seed.run(random_artifact, load_weights))


def test_a_write_killed_midway_leaves_no_artifact_and_the_rerun_trains(tmp_path):
    def killed(work_dir: Path) -> None:
        (work_dir / "weights.pt").write_bytes(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt  # the process dies mid-write

    stage = ArtifactStore(tmp_path).stage("demo", 1)
    with pytest.raises(KeyboardInterrupt):
        stage.run(killed, load_weights)
    assert not stage.directory.exists() and stage.work_dir.exists()
    rerun = ArtifactStore(tmp_path).stage("demo", 1)
    assert rerun.run(random_artifact, load_weights).shape == (5,)
    assert rerun.outcome == "trained" and rerun.complete


@pytest.mark.parametrize("damage", ["truncate", "no_marker"])
def test_a_damaged_artifact_is_moved_aside_and_retrained(tmp_path, caplog, damage):
    stage = ArtifactStore(tmp_path).stage("demo", 1)
    good = stage.run(random_artifact, load_weights)
    if damage == "truncate":
        data = (stage.directory / "weights.pt").read_bytes()
        (stage.directory / "weights.pt").write_bytes(data[: len(data) // 2])
    else:
        (stage.directory / "stage.json").unlink()
    rerun = ArtifactStore(tmp_path).stage("demo", 1)
    with caplog.at_level("WARNING"):
        assert torch.equal(rerun.run(random_artifact, load_weights), good)
    assert rerun.outcome == "trained"
    assert len(list(tmp_path.glob("demo-*.corrupt-*"))) == 1
    if damage == "truncate":
        assert any("unreadable" in m and str(stage.name) in m for m in caplog.messages)


def test_non_finite_weights_are_never_cached(tmp_path):
    def diverged(work_dir: Path) -> None:
        save_artifact({"w": torch.tensor([1.0, float("inf")])}, work_dir / "weights.pt")

    stage = ArtifactStore(tmp_path).stage("demo", 1)
    with pytest.raises(FloatingPointError, match="demo-.*weights.pt.*NaN or inf.*optimizer.lr"):
        stage.run(diverged, load_weights)
    assert not stage.complete


def test_a_full_disk_is_reported_as_such(tmp_path):
    def full(work_dir: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="no space left on the device.*artifact_dir"):
        ArtifactStore(tmp_path).stage("demo", 1).run(full, load_weights)


def test_a_per_image_artifact_of_other_images_is_refused_as_unreadable(tmp_path):
    """Pseudo-labels of 5 images never reach a run of 4: the stage is moved aside and retrained."""
    path = tmp_path / "pseudo_labels.pt"
    torch.save(torch.arange(5), path)
    assert torch.equal(load_rows(path, 5), torch.arange(5))
    with pytest.raises(UnreadableArtifact, match=r"pseudo_labels.pt holds 5 rows for 4 images"):
        load_rows(path, 4)
