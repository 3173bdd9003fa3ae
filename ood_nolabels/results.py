"""A paper-style table across runs: ``python -m ood_nolabels.results multirun_outputs/<sweep>``.

Reads every run directory under the given paths (a directory holding ``metrics.json``; its
``.hydra/overrides.yaml`` says what the job was asked). Rows are the values that differ between
the runs (the swept overrides) and the scorer; columns are the OOD sets; cells are AUROC in %
(``--metric`` adds others, e.g. ``--metric auroc fpr95``). Runs that measured their clustering
(``cluster/acc``, ``nmi``, ``ari`` of the final pseudo-labels, when the normal data has labels)
add a second table with the same rows, so a stage-1 sweep (``method=stage1_only``) gets one too.
``--over seed`` averages over seeds: the runs that differ only in the seed share a row, reported
as mean ± sample standard deviation (number of runs). The tables are printed as Markdown and
written as ``results.md`` (both), ``results.csv`` and ``clustering.csv``; with W&B online they
are also logged as W&B Tables.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from ood_nolabels.core.metric_keys import FINAL, METRICS, ood_metrics_of
from ood_nolabels.core.tables import HEADERS, markdown_table
from ood_nolabels.report.wandb_mode import use_offline_wandb_without_credentials

log = logging.getLogger(__name__)


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Run directories (holding ``metrics.json``) at or below ``paths``, in path order."""
    runs: list[Path] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        found = [path] if (path / "metrics.json").is_file() else []
        runs += found or sorted(p.parent for p in path.rglob("metrics.json"))
    if not runs:
        raise FileNotFoundError(
            f"no metrics.json under {', '.join(map(str, paths))}: give a run directory or a sweep "
            "directory (multirun_outputs/<task>/<time>) whose jobs finished"
        )
    return list(dict.fromkeys(runs))


def overrides_of(run: Path) -> dict[str, str]:
    """The job's command-line overrides, ``{"K": "4", "experiment": "digits", ...}``."""
    path = run / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(path.read_text()) if path.is_file() else []
    pairs = (item.split("=", 1) for item in overrides or [] if "=" in item)
    return {key.lstrip("+~"): value for key, value in pairs}


# The final pseudo-labels' agreement with the true classes (``cluster/<name>`` in metrics.json).
CLUSTER_METRICS = ("acc", "nmi", "ari")


@dataclass(frozen=True)
class Run:
    """One run directory's overrides and numeric metrics, read once for all the tables."""

    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float]


def load_runs(directories: Sequence[Path]) -> list[Run]:
    runs = []
    for directory in directories:
        metrics = json.loads((directory / "metrics.json").read_text())
        numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        runs.append(Run(directory, overrides_of(directory), numeric))
    return runs


def long_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per (run, OOD set, scorer, metric) of the final model, with the run's overrides;
    empty when no run has final OOD metrics."""
    records = []
    for run in runs:
        for key, value in ood_metrics_of(run.metrics).items():
            if key.scope == FINAL:
                records.append(
                    {"run": str(run.path), **run.overrides}
                    | {"scorer": key.scorer, "ood_set": key.ood_set}
                    | {"metric": key.metric, "value": 100 * value}
                )
    return pd.DataFrame.from_records(records)


def varying_overrides(table: pd.DataFrame, reserved: set[str]) -> list[str]:
    """The override columns whose value differs between the runs."""
    return [c for c in table.columns if c not in reserved and table[c].fillna("").nunique() > 1]


def results_frame(
    table: pd.DataFrame,
    metrics: Sequence[str] = ("auroc",),
    over: Sequence[str] = (),
    statistic: str = "first",
) -> pd.DataFrame:
    """Rows: the overrides that differ between runs (the run directory if none do) and the
    scorer; columns: OOD set (and metric when several are asked for); values in %.

    ``over`` (e.g. ``["seed"]``) are overrides left out of the rows: the runs that differ only in
    them share a row, whose value is their ``statistic`` (``mean``, ``std``, ``count``)."""
    reserved = {"run", "scorer", "ood_set", "metric", "value", *over}
    if over:
        reserved.add("run")
    varying = varying_overrides(table, reserved)
    index = [*(varying or (["run"] if not over else [])), "scorer"]
    chosen = table[table["metric"].isin(metrics)].fillna({c: "" for c in varying})
    columns = ["ood_set"] if len(metrics) == 1 else ["ood_set", "metric"]
    frame = chosen.pivot_table(index=index, columns=columns, values="value", aggfunc=statistic)
    return frame.round(1) if statistic != "count" else frame


def clustering_frame(
    runs: Sequence[Run], over: Sequence[str] = (), statistic: str = "first"
) -> pd.DataFrame:
    """Rows: the overrides that differ between the runs that measured their clustering (the run
    directory if none do); columns: accuracy, NMI, ARI of the final pseudo-labels in %. Runs with
    the same row (e.g. scorer jobs sharing one clustering) are listed once; with ``over`` the
    runs that differ only in those overrides share a row, their ``statistic``."""
    records = []
    for run in runs:
        values = {
            m: 100 * run.metrics[f"cluster/{m}"]
            for m in CLUSTER_METRICS
            if f"cluster/{m}" in run.metrics
        }
        if values:
            records.append({"run": str(run.path), **run.overrides, **values})
    if not records:
        return pd.DataFrame()
    table = pd.DataFrame.from_records(records)
    varying = varying_overrides(table, {"run", "scorer", *CLUSTER_METRICS, *over})
    index = varying or ["run"]
    columns = [m for m in CLUSTER_METRICS if m in table.columns]
    keep = [*index, *over, *columns] if over else [*index, *columns]
    frame = table.fillna({c: "" for c in varying}).drop_duplicates(keep)
    if not over:
        return frame.set_index(index)[columns].sort_index().round(1)
    if not varying:
        frame = frame.assign(runs="all")
        index = ["runs"]
    grouped = frame.groupby(index)[columns].agg(statistic)
    return grouped.round(1) if statistic != "count" else grouped


def to_markdown(
    frame: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    spread: pd.DataFrame | None = None,
    counts: pd.DataFrame | None = None,
) -> str:
    """``metrics``: the OOD metrics of a :func:`results_frame`; None for plain column names.
    With ``spread`` (standard deviations) and ``counts`` of the same shape, each cell reads
    ``mean ± std (n)``."""

    def label(column) -> str:
        if isinstance(column, tuple):
            return f"{column[0]} {HEADERS.get(column[1], column[1])}"
        if metrics is None:
            return str(column)
        return f"{column} {HEADERS.get(metrics[0], metrics[0])}"

    if spread is not None:  # a single run has no std: pandas drops its row, NaN it back
        spread = spread.reindex(index=frame.index, columns=frame.columns)
        counts = counts.reindex(index=frame.index, columns=frame.columns)

    def cell(row: int, column: int) -> str:
        value = f"{frame.iat[row, column]:.1f}"
        if spread is None:
            return value
        deviation = spread.iat[row, column]
        deviation = 0.0 if pd.isna(deviation) else deviation
        return f"{value} ± {deviation:.1f} ({int(counts.iat[row, column])})"

    header = [*frame.index.names, *(label(c) for c in frame.columns)]
    rows = [
        [
            *(map(str, index if isinstance(index, tuple) else (index,))),
            *(cell(r, c) for c in range(frame.shape[1])),
        ]
        for r, index in enumerate(frame.index)
    ]
    return markdown_table(header, rows)


def log_to_wandb(frames: dict[str, pd.DataFrame], runs: Sequence[Run], project: str) -> None:
    """The tables as W&B Tables (named by the keys) in a ``results`` run of the sweep's group."""
    import wandb

    sweep = runs[0].path.parent
    group = f"{sweep.parent.name}/{sweep.name}"
    tables = {}
    for name, frame in frames.items():
        flat = frame.reset_index()
        flat.columns = [" ".join(map(str, c)).strip() if isinstance(c, tuple) else c for c in flat]
        tables[name] = wandb.Table(dataframe=flat)
    with wandb.init(project=project, group=group, job_type="results", name="results") as run:
        run.log(tables)


def tables_of(
    runs: Sequence[Run], metrics: Sequence[str], over: Sequence[str] = (), statistic: str = "first"
) -> dict[str, pd.DataFrame]:
    """``{"results": OOD table, "clustering": clustering table}``, each only when some run has
    its metrics (``over`` / ``statistic`` as :func:`results_frame`); an error when neither has
    any."""
    frames = {}
    table = long_table(runs)
    if not table.empty:
        frames["results"] = results_frame(table, metrics, over, statistic)
    clustering = clustering_frame(runs, over, statistic)
    if not clustering.empty:
        frames["clustering"] = clustering
    if not frames:
        raise ValueError(
            f"the {len(runs)} run(s) have no final OOD metrics (ood/...) nor clustering "
            "metrics (cluster/...): did they finish, and does the normal data have labels?"
        )
    return frames


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ood_nolabels.results", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("paths", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument(
        "--metric", nargs="+", default=["auroc"], choices=METRICS, help="metrics to tabulate"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where results.md/.csv go (default: the "
        "single directory given, else the current directory)",
    )
    parser.add_argument(
        "--wandb",
        choices=["auto", "on", "off"],
        default="auto",
        help="log a W&B Table: auto = only when W&B is online",
    )
    parser.add_argument(
        "--over",
        nargs="+",
        default=[],
        metavar="KEY",
        help="overrides averaged over, e.g. --over seed: runs differing only in them share a "
        "row, mean ± sample std (number of runs)",
    )
    parser.add_argument("--project", default="ood-nolabels", help="W&B project")
    args = parser.parse_args(argv)

    try:
        runs = load_runs(find_runs(args.paths))
        frames = tables_of(runs, args.metric, args.over, "mean" if args.over else "first")
        if args.over:
            spreads = tables_of(runs, args.metric, args.over, "std")
            counts = tables_of(runs, args.metric, args.over, "count")
    except (FileNotFoundError, ValueError) as error:  # a message, not a traceback
        parser.error(str(error))
    output = args.output or (args.paths[0] if len(args.paths) == 1 else Path.cwd())
    output.mkdir(parents=True, exist_ok=True)
    sections, written = [], [output / "results.md"]
    over = f", mean ± std over {', '.join(args.over)} (runs)" if args.over else ""

    def spread(name: str) -> dict[str, pd.DataFrame]:
        return {"spread": spreads[name], "counts": counts[name]} if args.over else {}

    if "results" in frames:
        text = to_markdown(frames["results"], args.metric, **spread("results"))
        sections.append(f"OOD detection (OOD = positive class, values in %{over}):\n\n{text}")
    if "clustering" in frames:
        text = to_markdown(frames["clustering"], **spread("clustering"))
        sections.append(f"Clustering of the normal training set (values in %{over}):\n\n{text}")
    for name, frame in frames.items():
        if args.over:
            table = {"mean": frame, "std": spreads[name], "runs": counts[name]}
            table = pd.concat(table, axis=1)
        else:
            table = frame
        table.to_csv(output / f"{name}.csv")
        written.append(output / f"{name}.csv")
    (output / "results.md").write_text("\n\n".join(sections) + "\n")
    print(f"{len(runs)} runs\n\n" + "\n\n".join(sections) + "\n")
    print(f"written: {', '.join(map(str, written))}")
    online = use_offline_wandb_without_credentials() == "online"
    if args.wandb == "on" or (args.wandb == "auto" and online):
        log_to_wandb(frames, runs, args.project)


if __name__ == "__main__":
    main()
