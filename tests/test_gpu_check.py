"""scripts/gpu_check.sh --dry-run: every step's control flow on the CPU, and its report."""

import re
import subprocess
from pathlib import Path

import pytest

from benchmarks.gpu_check import STEPS, Check, run_steps

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_writes_a_report_with_every_step(tmp_path):
    report = tmp_path / "GPU_CHECK.md"
    completed = subprocess.run(
        [
            "bash",
            "scripts/gpu_check.sh",
            "--dry-run",
            "--report",
            str(report),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    text = report.read_text()
    assert "DRY RUN" in text and "FAILED" not in text
    for title in STEPS:
        assert f"## {title}" in text
    # numbers from each measuring step, not placeholders
    assert re.search(r"ood/\S+/auroc +\| \d+\.\d +\| \d+\.\d", text)  # demo: GPU next to CPU
    assert re.search(r"\*\*\d+ images/s\*\*. Projected: finetune 5 epochs \d", text)
    assert len(re.findall(r"\| \d+ +\| SimCLR 500 epochs", text)) == 2  # both augmentation paths
    assert re.search(r"faiss IndexFlatIP, CPU +\| \d+\.\d{3}", text)
    assert "exit 0" in text


def test_a_failing_step_is_reported_and_the_others_still_run(tmp_path):
    def broken(check: Check) -> str:
        raise RuntimeError("no NCCL here")

    steps = {"first": broken, "second": lambda check: f"device {check.device}"}
    report, failed = run_steps(Check(dry_run=True, work_dir=tmp_path), steps)
    assert failed == ["first"]
    assert "## first" in report and "RuntimeError: no NCCL here" in report
    assert "## second" in report and "device cpu" in report
