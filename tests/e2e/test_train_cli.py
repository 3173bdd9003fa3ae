"""``python -m ood_nolabels.train`` in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import auroc_from_scores

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ood_nolabels.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


@pytest.mark.slow
def test_cli_runs_and_writes_results(tmp_path):
    result = cli("+experiment=dn2_synthetic", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| synthetic_4_5 | knn" in result.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    expected = auroc_from_scores(tmp_path / "run", "synthetic_4_5", "knn")
    assert metrics["ood/synthetic_4_5/knn/auroc"] == pytest.approx(expected, abs=1e-6)
    assert (tmp_path / "run" / "csv").is_dir()


@pytest.mark.slow
def test_cli_unknown_experiment_is_a_clear_error(tmp_path):
    result = cli("+experiment=does_not_exist", cwd=tmp_path)
    assert result.returncode != 0
    assert "experiment/does_not_exist" in result.stderr
    assert "dn2_digits" in result.stderr  # Hydra lists the available presets
