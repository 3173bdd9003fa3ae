"""The cached-stage helper: atomic artifacts, locking, corruption recovery, per-stage seeds."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ood_nolabels.engine.artifacts import ArtifactStore, load_artifact, save_artifact
from ood_nolabels.train import run

ROOT = Path(__file__).resolve().parents[1]
FAST = ("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")


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


WORKER = """
import sys, time
from pathlib import Path
import torch
from ood_nolabels.engine.artifacts import ArtifactStore, load_artifact, save_artifact

root, name = Path(sys.argv[1]), sys.argv[2]
def train(work_dir):
    (root / f"training-{name}").touch()
    save_artifact(torch.randn(1000), work_dir / "a.pt")
    time.sleep(3)
    save_artifact(torch.randn(1000), work_dir / "b.pt")
stage = ArtifactStore(root / "artifacts").stage("demo", 1)
out = stage.run(train, lambda d: torch.cat([load_artifact(d / "a.pt"), load_artifact(d / "b.pt")]))
torch.save(out, root / f"out-{name}.pt")
print(stage.outcome)
"""


def test_two_processes_needing_one_stage_train_it_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(name: str) -> subprocess.Popen:
        command = [sys.executable, "-c", WORKER, str(tmp_path), name]
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)

    first = start("a")
    deadline = time.time() + 60
    while not (tmp_path / "training-a").exists():  # the second starts while the first trains
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    second = start("b")
    outcomes = [first.communicate(timeout=120)[0].strip(), second.communicate(timeout=120)[0]]
    assert first.returncode == 0 and second.returncode == 0
    assert outcomes == ["trained", "reused\n"]
    assert not (tmp_path / "training-b").exists()
    assert torch.equal(torch.load(tmp_path / "out-a.pt"), torch.load(tmp_path / "out-b.pt"))


def test_a_truncated_stage_file_in_a_real_run_is_retrained(compose_cfg, caplog):
    cfg = compose_cfg(*FAST, "method=stage1_only", "stage1.stop_after=pretext")
    first = run(cfg)
    (simclr_dir,) = Path(cfg.paths.artifact_dir).glob("simclr-*[0-9a-f]")
    weights = simclr_dir / "simclr.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    with caplog.at_level("WARNING"):
        assert run(cfg) == first
    assert any("unreadable" in m and simclr_dir.name in m for m in caplog.messages)
    assert load_artifact(weights)  # a complete file again


def test_same_metrics_whatever_is_cached(compose_cfg):
    """Stage results depend on their config only, not on which stages were cached before."""
    fast = ("+experiment=ours_synthetic", "logger=none", "callbacks=none")
    cfg = compose_cfg(*fast)
    artifacts = Path(cfg.paths.artifact_dir)
    fresh = run(cfg)
    for stage in ("finetune", "selflabel", "scan"):  # reuse fewer and fewer stages
        for path in artifacts.glob(f"{stage}-*"):
            os.rename(path, tmp := path.with_name(f"old-{path.name}"))
            assert tmp.exists()
        assert run(compose_cfg(*fast)) == fresh, stage


@pytest.mark.slow
def test_two_runs_on_one_artifact_directory_at_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}

    def start(name: str) -> subprocess.Popen:
        args = [
            *FAST,
            f"paths.artifact_dir={tmp_path}/artifacts",
            f"hydra.run.dir={tmp_path}/{name}",
        ]
        return subprocess.Popen(
            [sys.executable, "-m", "ood_nolabels.train", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    runs = [start("a"), start("b")]
    errors = [r.communicate(timeout=600)[1] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    metrics = [(tmp_path / n / "metrics.json").read_text() for n in "ab"]
    assert metrics[0] == metrics[1]
    complete = sorted(p.name for p in (tmp_path / "artifacts").iterdir() if p.suffix == "")
    assert [name.split("-")[0] for name in complete] == ["mining", "scan", "selflabel", "simclr"]
    assert not list((tmp_path / "artifacts").glob("*.partial"))


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
