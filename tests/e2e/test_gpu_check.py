"""scripts/gpu_check.sh --dry-run: every step's control flow on the CPU, and its report."""

import re
import subprocess
from pathlib import Path

import pytest

from benchmarks.gpu_check import STEPS, Check, run_steps

REPO = Path(__file__).resolve().parents[2]


def dry_run(tmp_path: Path, *steps: str) -> str:
    """``scripts/gpu_check.sh --dry-run --steps <steps>``: the report it writes."""
    report = tmp_path / "GPU_CHECK.md"
    command = ["bash", "scripts/gpu_check.sh", "--dry-run", "--report", str(report)]
    command += ["--work-dir", str(tmp_path / "work"), "--steps", *steps]
    completed = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    text = report.read_text()
    assert "DRY RUN" in text and "FAILED" not in text
    return text


# The dry run in two halves (each under a minute); together they cover every step.
HALVES = {"runs and searches": ("Digits", "ViT", "SimCLR", "kNN"), "pipelines": ("ddp", "Frozen")}


def test_the_halves_cover_every_step():
    words = [word.lower() for half in HALVES.values() for word in half]
    covered = [t for t in STEPS if t == "Environment" or any(w in t.lower() for w in words)]
    assert covered == list(STEPS)


@pytest.mark.slow
def test_dry_run_of_the_runs_and_searches(tmp_path):
    text = dry_run(tmp_path, *HALVES["runs and searches"])
    for title in STEPS:
        words = HALVES["runs and searches"]
        expected = title == "Environment" or any(w.lower() in title.lower() for w in words)
        assert (f"## {title}" in text) == expected
    # numbers from each measuring step, not placeholders
    assert re.search(r"ood/\S+/auroc +\| \d+\.\d +\| \d+\.\d", text)  # demo: GPU next to CPU
    assert re.search(r"\*\*\d+ images/s\*\*. Projected: finetune 5 epochs \d", text)
    assert len(re.findall(r"\| \d+ +\| SimCLR 500 epochs", text)) == 2  # both augmentation paths
    assert re.search(r"faiss IndexFlatIP, CPU +\| \d+\.\d{3}", text)
    assert "features on a GPU would be searched with" in text


@pytest.mark.slow
def test_dry_run_of_the_pipelines(tmp_path):
    text = dry_run(tmp_path, *HALVES["pipelines"])
    assert "## 1-GPU trainer=ddp run of the synthetic method" in text and "exit 0" in text
    assert re.search(r"projected stage 1 \(full recipe\): \d+\.\d s", text)


def test_a_failing_step_is_reported_and_the_others_still_run(tmp_path):
    def broken(check: Check) -> str:
        raise RuntimeError("no NCCL here")

    steps = {"first": broken, "second": lambda check: f"device {check.device}"}
    report, failed = run_steps(Check(dry_run=True, work_dir=tmp_path), steps)
    assert failed == ["first"]
    assert "## first" in report and "RuntimeError: no NCCL here" in report
    assert "## second" in report and "device cpu" in report
