"""scripts/results_fashion_mnist.sh: seed-major order, resume by (seed, split), stale results.

The runs are replaced by a fake interpreter (``PYTHON``) that records its arguments, so only
the script's own control flow is under test; the runs themselves are tested elsewhere.
"""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
echo "${PYTHONPATH%%:*}" >> "$CALLS.path"
if [[ "$2" == ood_nolabels.train ]]; then
    for arg in "$@"; do
        case "$arg" in hydra.sweep.dir=*) mkdir -p "${arg#hydra.sweep.dir=}" ;; esac
    done
    [[ -z "${FAIL:-}" ]] || exit 3
fi
"""


Run = tuple[subprocess.CompletedProcess, list[str]]


def protocol(tmp_path: Path, *overrides: str, cwd: Path = REPO, **env: str) -> Run:
    """Run the script with the fake interpreter in ``cwd``; return it and the calls it made."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.unlink(missing_ok=True)
    variables = {
        **os.environ,
        "PYTHON": str(fake),
        "CALLS": str(calls),
        "SWEEP": str(tmp_path / "sweep"),
        "OUT": str(tmp_path / "out"),
        **env,
    }
    completed = subprocess.run(
        ["bash", str(REPO / "scripts/results_fashion_mnist.sh"), *overrides],
        cwd=cwd,
        env=variables,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed, calls.read_text().splitlines() if calls.exists() else []


def train_calls(calls: list[str]) -> list[str]:
    return [call for call in calls if call.startswith("-m ood_nolabels.train")]


def test_seed_major_order_with_the_four_presets_and_a_table_per_split(tmp_path):
    completed, calls = protocol(tmp_path, SPLITS="1 3", SEEDS="0 1")
    assert completed.returncode == 0, completed.stderr
    runs = train_calls(calls)
    order = [(r.split("seed=")[1].split()[0], r.split("classes=")[1].split()[0]) for r in runs]
    assert order == [
        ("0", "[0,1,2,4,7,8]"),
        ("0", "[0,1,2,4,6,9]"),
        ("1", "[0,1,2,4,7,8]"),
        ("1", "[0,1,2,4,6,9]"),
    ]
    assert all(
        "+experiment=fmnist_dn2,fmnist,fmnist_ground_truth,fmnist_scan_features" in r
        and "++dataset.train_per_class=null" in r
        for r in runs
    )
    assert f"hydra.sweep.dir={tmp_path}/sweep/split3/seed1" in runs[-1]
    tables = [c for c in calls if c.startswith("-m ood_nolabels.results")]
    sweep, out = tmp_path / "sweep/split3", tmp_path / "out/split3"
    assert tables[-1] == f"-m ood_nolabels.results {sweep} --over seed --output {out}"
    assert len(tables) == 4  # rewritten after each (seed, split)
    assert calls[-2:] == [  # every split, both scorers
        f"scripts/fashion_mnist_targets.py {tmp_path}/sweep",
        f"scripts/fashion_mnist_targets.py {tmp_path}/sweep --scorer mahalanobis",
    ]


def test_a_finished_seed_and_split_is_skipped_and_other_arguments_run_again(tmp_path):
    assert protocol(tmp_path, SPLITS="2", SEEDS="0", PER_CLASS="500")[0].returncode == 0
    completed, calls = protocol(tmp_path, SPLITS="2", SEEDS="0", PER_CLASS="500")
    assert completed.returncode == 0 and train_calls(calls) == []
    assert "split 2 seed 0: done with this code, skipped" in completed.stdout

    stale = tmp_path / "sweep/split2/seed0/0/metrics.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    small = {"SPLITS": "2", "SEEDS": "0", "PER_CLASS": "500"}
    completed, calls = protocol(tmp_path, "finetune.epochs=1", **small)
    assert completed.returncode == 0
    assert len(train_calls(calls)) == 1 and train_calls(calls)[0].endswith("finetune.epochs=1")
    assert not stale.exists()  # the old arguments' results are gone, not mixed into the table


def test_a_failed_run_is_not_marked_done(tmp_path):
    completed, calls = protocol(tmp_path, SPLITS="1", SEEDS="0", FAIL="1")
    assert completed.returncode == 3
    assert not (tmp_path / "sweep/split1/seed0/.complete").exists()
    assert not [c for c in calls if "ood_nolabels.results" in c]  # stopped before the table
    completed, calls = protocol(tmp_path, SPLITS="1", SEEDS="0")
    assert completed.returncode == 0 and len(train_calls(calls)) == 1  # the next call runs it


def test_a_change_to_the_package_runs_it_again_without_git(tmp_path):
    """The stamp hashes the package's files, so a copy outside any git checkout works too."""
    checkout = tmp_path / "checkout"
    module = checkout / "ood_nolabels" / "stage.py"
    module.parent.mkdir(parents=True)
    module.write_text("STEPS = 187\n")
    one = {"SPLITS": "1", "SEEDS": "0", "cwd": checkout}
    assert protocol(tmp_path, **one)[0].returncode == 0
    completed, calls = protocol(tmp_path, **one)
    assert completed.returncode == 0 and train_calls(calls) == []

    module.write_text("STEPS = 188\n")
    completed, calls = protocol(tmp_path, **one)
    assert completed.returncode == 0 and len(train_calls(calls)) == 1
    (checkout / "ood_nolabels" / "new.yaml").write_text("K: 6\n")  # an untracked file counts
    completed, calls = protocol(tmp_path, **one)
    assert completed.returncode == 0 and len(train_calls(calls)) == 1


def test_every_step_imports_the_package_of_the_checkout_it_runs_in(tmp_path):
    """Not the one an editable install points at: the stamp hashes this checkout's code."""
    completed, calls = protocol(tmp_path, SPLITS="1", SEEDS="0", PYTHONPATH="/elsewhere")
    assert completed.returncode == 0, completed.stderr
    paths = (tmp_path / "calls.txt.path").read_text().splitlines()
    assert len(paths) == len(calls) == 4  # train, table, both targets
    assert set(paths) == {str(REPO)}


def test_outside_a_checkout_it_says_where_to_run_it_before_any_run(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    completed, calls = protocol(tmp_path, SPLITS="1", SEEDS="0", cwd=elsewhere)
    assert completed.returncode == 2 and calls == []
    assert "run this script from the repository root" in completed.stderr
    assert str(elsewhere) in completed.stderr
