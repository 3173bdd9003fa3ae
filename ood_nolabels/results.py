"""A paper-style table across runs: ``python -m ood_nolabels.results multirun_outputs/<sweep>``.

Reads every run directory under the given paths (a directory holding ``metrics.json``; its
``.hydra/overrides.yaml`` says what the job was asked). Rows are the values that differ between
the runs (the swept overrides) and the scorer; columns are the OOD sets; cells are AUROC in %
(``--metric`` adds others, e.g. ``--metric auroc fpr95``). The table is printed as Markdown and
written as ``results.md`` and ``results.csv``; with W&B online it is also logged as a W&B Table.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from ood_nolabels.reporting import HEADERS, markdown_table
from ood_nolabels.scoring.keys import FINAL, ood_metrics_of
from ood_nolabels.scoring.metrics import METRICS
from ood_nolabels.utils.wandb_mode import use_offline_wandb_without_credentials

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


def long_table(runs: Sequence[Path]) -> pd.DataFrame:
    """One row per (run, OOD set, scorer, metric) of the final model, with the run's overrides."""
    records = []
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        overrides = overrides_of(run)
        for key, value in ood_metrics_of(numeric).items():
            if key.scope == FINAL:
                records.append(
                    {"run": str(run), **overrides, "scorer": key.scorer, "ood_set": key.ood_set}
                    | {"metric": key.metric, "value": 100 * value}
                )
    if not records:
        raise ValueError(f"none of the {len(runs)} runs has final OOD metrics (ood/...)")
    return pd.DataFrame.from_records(records)


def results_frame(table: pd.DataFrame, metrics: Sequence[str] = ("auroc",)) -> pd.DataFrame:
    """Rows: the overrides that differ between runs (the run directory if none do) and the
    scorer; columns: OOD set (and metric when several are asked for); values in %."""
    reserved = {"run", "scorer", "ood_set", "metric", "value"}
    overrides = [c for c in table.columns if c not in reserved]
    varying = [c for c in overrides if table[c].fillna("").nunique() > 1]
    index = [*(varying or ["run"]), "scorer"]
    chosen = table[table["metric"].isin(metrics)].fillna({c: "" for c in varying})
    columns = ["ood_set"] if len(metrics) == 1 else ["ood_set", "metric"]
    frame = chosen.pivot_table(index=index, columns=columns, values="value", aggfunc="first")
    return frame.round(1)


def to_markdown(frame: pd.DataFrame, metrics: Sequence[str]) -> str:
    def label(column) -> str:
        if isinstance(column, tuple):
            return f"{column[0]} {HEADERS.get(column[1], column[1])}"
        return f"{column} {HEADERS.get(metrics[0], metrics[0])}"

    header = [*frame.index.names, *(label(c) for c in frame.columns)]
    rows = [
        [*(map(str, index if isinstance(index, tuple) else (index,))), *(f"{v:.1f}" for v in row)]
        for index, row in zip(frame.index, frame.to_numpy(), strict=True)
    ]
    return markdown_table(header, rows)


def log_to_wandb(frame: pd.DataFrame, runs: Sequence[Path], project: str) -> None:
    """The table as a W&B Table in a ``results`` run of the sweep's group."""
    import wandb

    group = f"{runs[0].parent.parent.name}/{runs[0].parent.name}"
    flat = frame.reset_index()
    flat.columns = [" ".join(map(str, c)).strip() if isinstance(c, tuple) else c for c in flat]
    with wandb.init(project=project, group=group, job_type="results", name="results") as run:
        run.log({"results": wandb.Table(dataframe=flat)})


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
    parser.add_argument("--project", default="ood-nolabels", help="W&B project")
    args = parser.parse_args(argv)

    try:
        runs = find_runs(args.paths)
        frame = results_frame(long_table(runs), args.metric)
    except (FileNotFoundError, ValueError) as error:  # a message, not a traceback
        parser.error(str(error))
    text = to_markdown(frame, args.metric)
    output = args.output or (args.paths[0] if len(args.paths) == 1 else Path.cwd())
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.md").write_text(text + "\n")
    frame.to_csv(output / "results.csv")
    print(f"{len(runs)} runs; OOD = positive class, values in %\n\n{text}\n")
    print(f"written: {output / 'results.md'}, {output / 'results.csv'}")
    online = use_offline_wandb_without_credentials() == "online"
    if args.wandb == "on" or (args.wandb == "auto" and online):
        log_to_wandb(frame, runs, args.project)


if __name__ == "__main__":
    main()
