"""scripts/multinode_rehearsal.py: 2 "nodes" x 1 CPU process on localhost against 1 node x 2."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_nodes_train_once_write_once_and_match_one_node(tmp_path):
    completed = subprocess.run(
        [sys.executable, "scripts/multinode_rehearsal.py", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    report = completed.stdout + completed.stderr[-3000:]
    assert completed.returncode == 0, report
    assert report.count("| yes |") == 3 and "| NO |" not in report
    # the script's checks, read back independently
    stages = sorted(p.name for p in (tmp_path / "artifacts_shared").iterdir() if p.is_dir())
    assert [name.split("-")[0] for name in stages] == [
        "finetune",
        "mining",
        "scan",
        "selflabel",
        "simclr",
    ]
    assert stages == sorted(p.name for p in (tmp_path / "artifacts_single").iterdir() if p.is_dir())
    assert (tmp_path / "node0" / "metrics.json").is_file()
    assert not (tmp_path / "node1" / "metrics.json").exists()
    assert (tmp_path / "node0" / "metrics.json").read_text() == (
        tmp_path / "single_node" / "metrics.json"
    ).read_text()


def test_metrics_difference_counts_every_unequal_entry():
    """A changed file name is an infinite difference, a missing metric an error."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from multinode_rehearsal import metrics_difference
    finally:
        sys.path.pop(0)
    assert (
        metrics_difference({"a": 0.5, "detector": "d.pt"}, {"a": 0.25, "detector": "d.pt"}) == 0.25
    )
    assert metrics_difference(
        {"a": 0.5, "detector": "d.pt"}, {"a": 0.5, "detector": "e.pt"}
    ) == float("inf")
    with pytest.raises(SystemExit, match="different metrics"):
        metrics_difference({"a": 0.5}, {"b": 0.5})
