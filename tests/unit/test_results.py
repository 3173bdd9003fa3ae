"""The results command: a table across runs, the clustering table, mean and std over seeds."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ood_nolabels.results import (
    clustering_frame,
    find_runs,
    load_runs,
    long_table,
    main,
    results_frame,
)


def fake_run(directory: Path, overrides: list[str], metrics: dict[str, float]) -> Path:
    (directory / ".hydra").mkdir(parents=True)
    (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory


def test_results_rows_are_the_varying_overrides_and_the_scorer(tmp_path):
    for job, (k, value) in enumerate([("4", 0.91), ("6", 0.955)]):
        fake_run(
            tmp_path / str(job),
            ["+experiment=digits", f"K={k}", "scorer=all"],
            {
                "ood/digits_6_9/knn/auroc": value,
                "ood/digits_6_9/mahalanobis/auroc": value - 0.1,
                "ood/digits_6_9/knn/fpr95": 0.2,
                "ood_epoch0/digits_6_9/knn/auroc": 0.5,  # per-epoch values stay out
                "cluster/acc": 0.99,
                "detector": "detector.pt",  # non-numeric entries are ignored
            },
        )
    runs = load_runs(find_runs([tmp_path]))
    frame = results_frame(long_table(runs))
    assert frame.index.names == ["K", "scorer"]  # experiment and scorer=all do not vary
    assert frame.loc[("6", "knn"), "digits_6_9"] == 95.5
    assert frame.loc[("4", "mahalanobis"), "digits_6_9"] == 81.0
    both = results_frame(long_table(runs), ["auroc", "fpr95"])
    assert both.loc[("4", "knn"), ("digits_6_9", "fpr95")] == 20.0


def test_results_tabulate_the_clustering_once_per_setting(tmp_path):
    """Scorer jobs that share one clustering give one row; runs without labels give none."""
    for job, (k, scorer, acc) in enumerate(
        [("4", "knn", 0.66), ("4", "mahalanobis", 0.66), ("6", "knn", 0.996)]
    ):
        fake_run(
            tmp_path / str(job),
            [f"K={k}", f"scorer={scorer}"],
            {"ood/d/knn/auroc": 0.9, "cluster/acc": acc, "cluster/nmi": 0.8, "cluster/ari": 0.7},
        )
    fake_run(tmp_path / "unlabeled", ["K=8", "scorer=knn"], {"ood/d/knn/auroc": 0.9})
    frame = clustering_frame(load_runs(find_runs([tmp_path])))
    assert frame.index.tolist() == ["4", "6"] and frame.index.name == "K"
    assert frame.loc["6", "acc"] == 99.6 and frame.loc["4", "ari"] == 70.0
    assert list(frame.columns) == ["acc", "nmi", "ari"]


def test_results_command_on_a_clustering_sweep_writes_the_clustering_table(tmp_path, capsys):
    for seed, acc in [("0", 0.663), ("1", 0.995)]:
        fake_run(
            tmp_path / seed, ["+experiment=stage1_digits", f"seed={seed}"], {"cluster/acc": acc}
        )
    main([str(tmp_path), "--wandb", "off"])
    written = (tmp_path / "results.md").read_text()
    assert "Clustering of the normal training set" in written and "OOD detection" not in written
    assert "| seed | acc  |" in written and "| 0    | 66.3 |" in written
    assert (tmp_path / "clustering.csv").is_file() and not (tmp_path / "results.csv").exists()
    fake_run(tmp_path / "nothing", ["seed=2"], {"simclr/train_loss": 1.0})
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "nothing")])
    assert exit_.value.code == 2
    assert "no final OOD metrics (ood/...) nor clustering metrics" in capsys.readouterr().err


def test_results_command_explains_an_empty_or_missing_directory(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    assert exit_.value.code == 2 and "no metrics.json under" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "typo")])
    assert "typo does not exist" in capsys.readouterr().err


def test_results_over_seeds_report_mean_std_and_count(tmp_path, capsys):
    values = {("a", "0"): 0.90, ("a", "1"): 0.92, ("a", "2"): 0.97, ("b", "0"): 0.80}
    for (split, seed), value in values.items():
        fake_run(
            tmp_path / f"{split}{seed}",
            ["+experiment=fmnist", f"dataset.classes={split}", f"seed={seed}"],
            {"ood/held_out/knn/auroc": value, "cluster/acc": value - 0.2},
        )
    main([str(tmp_path), "--over", "seed", "--wandb", "off"])
    a = 100 * np.array([0.90, 0.92, 0.97])
    written = (tmp_path / "results.md").read_text()
    assert f"| a               | knn    | {a.mean():.1f} ± {a.std(ddof=1):.1f} (3) |" in written
    assert "| b               | knn    | 80.0 ± 0.0 (1) |" in written
    assert "mean ± std over seed (runs)" in written
    clustering = pd.read_csv(tmp_path / "clustering.csv", header=[0, 1], index_col=0)
    assert clustering.loc["a", ("mean", "acc")] == pytest.approx(round((a - 20).mean(), 1))
    assert clustering.loc["a", ("std", "acc")] == pytest.approx(round((a - 20).std(ddof=1), 1))
