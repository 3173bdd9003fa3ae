"""The Fashion-MNIST targets, split by split, from the runs of scripts/results_fashion_mnist.sh.

For each class split (``dataset.classes``) it prints the AUROC of the method (``fmnist``), DN2
(``fmnist_dn2``) and ground-truth-label finetuning (``fmnist_ground_truth``), then each target
as the difference it is about, mean ± sample std over the seeds (runs), paired by seed, and
whether the mean meets it::

    scripts/results_fashion_mnist.sh
    python scripts/fashion_mnist_targets.py multirun_outputs/results/fashion_mnist

The method's pseudo-labels come from heads on the frozen pretrained features
(``stage1=frozen_features``), so "frozen-feature pseudo-labels vs DN2" is the method's row.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from ood_nolabels.core.metric_keys import EPOCH_MEAN, FINAL, ood_metrics_of
from ood_nolabels.core.tables import markdown_table
from ood_nolabels.results import Run, find_runs, load_runs

METHOD, DN2, GROUND_TRUTH = "fmnist", "fmnist_dn2", "fmnist_ground_truth"
# (what is compared, the minimum of its mean difference, in AUROC or accuracy points)
TARGETS = {
    "method − DN2": 3.0,
    "method − ground-truth labels": -2.0,
    "frozen-feature pseudo-labels − DN2": 0.0,
    "weight-averaged − mean of the epochs' models": 0.0,
    "stage-1 accuracy kept − after SCAN": 0.0,
}


def auroc(run: Run, scorer: str, scope: str = FINAL) -> float:
    """The run's AUROC in % of ``scorer`` for ``scope``'s model, on its one OOD set."""
    values = [
        value
        for key, value in ood_metrics_of(run.metrics).items()
        if key.scorer == scorer and key.metric == "auroc" and key.scope == scope
    ]
    if len(values) != 1:
        raise ValueError(f"{run.path}: {len(values)} {scope} AUROC values for {scorer}, not 1")
    return 100 * values[0]


def summary(values: list[float], signed: bool = True) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    mean = f"{statistics.mean(values):+.1f}" if signed else f"{statistics.mean(values):.1f}"
    return f"{mean} ± {spread:.1f} ({len(values)})"


def paired(first: dict[str, float], second: dict[str, float]) -> list[float]:
    """``first - second`` seed by seed; a baseline run once (one seed) pairs with every seed."""
    if len(second) == 1:
        (only,) = second.values()
        return [value - only for value in first.values()]
    return [first[seed] - second[seed] for seed in first if seed in second]


def split_rows(runs: dict[str, list[Run]], scorer: str) -> dict[str, str]:
    """Row name -> cell for one split's runs, by experiment."""
    by_seed = {
        name: {run.overrides.get("seed", "?"): auroc(run, scorer) for run in runs.get(name, [])}
        for name in (METHOD, DN2, GROUND_TRUTH)
    }
    cells = {
        f"{name} {scorer} AUROC": summary(list(values.values()), signed=False) if values else "-"
        for name, values in by_seed.items()
    }
    method_runs = runs.get(METHOD, [])
    over_dn2 = paired(by_seed[METHOD], by_seed[DN2])
    differences = {
        "method − DN2": over_dn2,
        "method − ground-truth labels": paired(by_seed[METHOD], by_seed[GROUND_TRUTH]),
        "frozen-feature pseudo-labels − DN2": over_dn2,  # the method's pseudo-labels (docstring)
        "weight-averaged − mean of the epochs' models": [
            auroc(run, scorer) - auroc(run, scorer, EPOCH_MEAN) for run in method_runs
        ],
        "stage-1 accuracy kept − after SCAN": [
            100 * (run.metrics["cluster/acc"] - run.metrics["cluster/scan/acc"])
            for run in method_runs
            if "cluster/scan/acc" in run.metrics
        ],
    }
    for name, values in differences.items():
        if not values:
            cells[f"{name} (≥ {TARGETS[name]:+.0f})"] = "-"
            continue
        met = "met" if statistics.mean(values) >= TARGETS[name] else "NOT met"
        cells[f"{name} (≥ {TARGETS[name]:+.0f})"] = f"{summary(values)} {met}"
    return cells


def targets_table(roots: list[Path], scorer: str = "knn") -> str:
    """Rows: the AUROCs and the targets; columns: the class splits found under ``roots``."""
    splits: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in load_runs(find_runs(roots)):
        classes = run.overrides.get("dataset.classes", "[0,1,2,3,4,5]")
        splits[classes][run.overrides.get("experiment", "")].append(run)
    columns = {classes: split_rows(runs, scorer) for classes, runs in sorted(splits.items())}
    names = list(next(iter(columns.values())))
    header = ["normal classes", *columns]
    return markdown_table(header, [[name, *(c[name] for c in columns.values())] for name in names])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", type=Path, nargs="+", help="the protocol's sweep folder(s)")
    parser.add_argument("--scorer", default="knn", help="knn (the targets') or mahalanobis")
    args = parser.parse_args()
    try:
        print(targets_table(args.sweeps, args.scorer))
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
