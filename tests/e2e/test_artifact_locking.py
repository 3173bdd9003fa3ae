"""Two processes that need one stage: the lock lets one train it and the other reuse it."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
FAST = ("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")
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


@pytest.mark.slow
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
