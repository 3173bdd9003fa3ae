"""``python -m ood_nolabels.score`` in a subprocess reproduces the run's scores exactly."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from ood_nolabels.core.ood_metrics import ood_metrics
from ood_nolabels.train import run

ROOT = Path(__file__).resolve().parents[2]


def write_pngs(images, directory: Path) -> None:
    directory.mkdir(parents=True)
    for i in range(len(images)):  # 8-bit grayscale PNG: lossless
        images.get_image(i).save(directory / f"{i:04d}.png")


def read_run_scores(run_dir: Path) -> dict[tuple[str, int, str], str]:
    with (run_dir / "scores.csv").open() as file:
        return {
            (r["split"], int(r["index"]), r["scorer"]): r["score"] for r in csv.DictReader(file)
        }


@pytest.mark.slow
def test_the_score_command_reproduces_the_run_exactly(compose_cfg, tmp_path):
    """Train the synthetic method (and reuse its stage 1 for the SCAN-features baseline), then
    score the test images, written as PNG files, in a fresh process through the CLI."""
    cfg = compose_cfg("+experiment=ours_synthetic", "logger=none", "callbacks=none")
    metrics = run(cfg)
    runs = {"ours": Path(cfg.paths.output_dir)}
    scan_cfg = compose_cfg("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")
    scan_cfg.paths.output_dir = str(tmp_path / "scan_run")
    runs["scan_features"] = Path(scan_cfg.paths.output_dir)
    scan_metrics = run(scan_cfg)

    write_pngs(instantiate(cfg.dataset).load("test"), tmp_path / "png" / "normal_test")
    write_pngs(instantiate(cfg.ood.synthetic_4_5).load("test"), tmp_path / "png" / "ood")
    (tmp_path / "png" / "ood" / "zz_broken.png").write_bytes(b"not an image")
    assert json.loads((runs["ours"] / "metrics.json").read_text())["detector"] == "detector.pt"
    saved = torch.load(runs["ours"] / "detector.pt", weights_only=True)
    assert saved["artifacts"][0].startswith("finetune-") and saved["num_clusters"] == cfg.K

    for method, run_metrics in (("ours", metrics), ("scan_features", scan_metrics)):
        output = tmp_path / f"{method}.csv"
        result = subprocess.run(
            [sys.executable, "-m", "ood_nolabels.score", str(runs[method])]
            + ["png/normal_test", "png/ood", "-o", str(output), "--no-progress"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "zz_broken.png" in result.stderr and "Scored 96 of 97 images" in result.stdout
        with output.open() as file:
            rows = list(csv.DictReader(file))
        expected = read_run_scores(runs[method])
        scores = {}
        for scorer in ("knn", "mahalanobis"):
            for row in rows:
                split = "normal_test" if "normal_test" in row["path"] else "synthetic_4_5"
                index = int(Path(row["path"]).stem)
                value = np.float32(row[scorer])
                # scores.csv keeps 8 significant digits; the CLI writes float32 exactly
                assert f"{value:.8g}" == expected[(split, index, scorer)], (method, row)
                scores.setdefault((scorer, split), []).append(value)
            normal = torch.tensor(scores[(scorer, "normal_test")])
            ood = torch.tensor(scores[(scorer, "synthetic_4_5")])
            detector = torch.load(runs[method] / "detector.pt", weights_only=True)
            assert torch.equal(normal, detector["normal_test_scores"][scorer])
            auroc = ood_metrics(normal, ood)["auroc"]
            assert auroc == run_metrics[f"ood/synthetic_4_5/{scorer}/auroc"]
