"""scripts/fashion_mnist_targets.py: the targets per split, against hand-computed differences."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SPLIT = "[0,1,2,4,7,8]"


def fake_run(directory: Path, experiment: str, seed: int, metrics: dict[str, float]) -> None:
    overrides = [f"+experiment={experiment}", f"++dataset.classes={SPLIT}", f"seed={seed}"]
    (directory / ".hydra").mkdir(parents=True)
    (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (directory / "metrics.json").write_text(json.dumps(metrics))


def auroc(value: float, scope: str = "ood") -> dict[str, float]:
    return {f"{scope}/held_out_classes/knn/auroc": value}


def table(*arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "scripts/fashion_mnist_targets.py", *arguments]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)


def cell(text: str, row: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(f"| {row}")]
    return line.split("|")[2].strip()


def test_each_target_is_the_paired_difference_and_says_whether_it_is_met(tmp_path):
    method = {0: 0.84, 1: 0.80, 2: 0.83}
    ground_truth = {0: 0.85, 1: 0.83, 2: 0.84}
    for seed in range(3):
        seed_dir = tmp_path / f"split1/seed{seed}"
        fake_run(seed_dir / "0", "fmnist_dn2", seed, auroc(0.80))
        metrics = auroc(method[seed]) | auroc(method[seed] - 0.01, "ood_epoch_mean")
        metrics |= {"cluster/acc": 0.88, "cluster/scan/acc": 0.88 + 0.01 * (seed == 1)}
        fake_run(seed_dir / "1", "fmnist", seed, metrics)
        fake_run(seed_dir / "2", "fmnist_ground_truth", seed, auroc(ground_truth[seed]))
    completed = table(str(tmp_path))
    assert completed.returncode == 0, completed.stderr
    text = completed.stdout
    assert text.splitlines()[0].split("|")[2].strip() == SPLIT

    gains = [100 * (method[s] - 0.80) for s in range(3)]
    expected = f"{statistics.mean(gains):+.1f} ± {statistics.stdev(gains):.1f} (3)"
    assert cell(text, "method − DN2") == f"{expected} NOT met"  # +2.3, below +3
    assert cell(text, "frozen-feature pseudo-labels − DN2") == f"{expected} met"
    gaps = [100 * (method[s] - ground_truth[s]) for s in range(3)]
    spread = statistics.stdev(gaps)
    assert (
        cell(text, "method − ground-truth")
        == f"{statistics.mean(gaps):+.1f} ± {spread:.1f} (3) met"
    )
    assert cell(text, "weight-averaged") == "+1.0 ± 0.0 (3) met"
    assert cell(text, "stage-1 accuracy") == "-0.3 ± 0.6 (3) NOT met"
    assert cell(text, "fmnist knn AUROC") == "82.3 ± 2.1 (3)"
    assert cell(text, "fmnist_dn2 knn AUROC") == "80.0 ± 0.0 (3)"


def test_a_missing_scorer_is_a_clear_error(tmp_path):
    fake_run(tmp_path / "0", "fmnist_dn2", 0, auroc(0.8))
    completed = table(str(tmp_path), "--scorer", "mahalanobis")
    assert completed.returncode == 2
    assert "0 ood AUROC values for mahalanobis, not 1" in completed.stderr
