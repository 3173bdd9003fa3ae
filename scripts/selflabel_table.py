"""What self-labelling did to stage 1, and what the label-free modularity check chose.

Reads the ``metrics.json`` of stage-1 runs (sweep folders, one job per subfolder) and prints, per
run, the clustering accuracy after SCAN and after self-labelling, the modularity of both
clusterings on the mined neighbour graph, and the accuracy of the pseudo-labels the run kept::

    python -m ood_nolabels.train -m +experiment=stage1_digits seed=0,1,2 logger=none \\
        hydra.sweep.dir=multirun_outputs/selflabel/digits
    python scripts/selflabel_table.py multirun_outputs/selflabel/digits
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from ood_nolabels.core.tables import markdown_table


def row(run: Path) -> list[str]:
    metrics = json.loads((run / "metrics.json").read_text())
    config = OmegaConf.load(run / "config_resolved.yaml")
    scan, selflabel = metrics["cluster/scan/acc"], metrics["cluster/selflabel/acc"]
    kept = "SCAN" if metrics["cluster/selflabel/kept_scan"] else "self-label"
    return [
        f"{run.parent.name} seed {config.seed}",
        f"{100 * scan:.1f}",
        f"{100 * selflabel:.1f}",
        f"{100 * (selflabel - scan):+.1f}",
        f"{metrics['cluster/scan/modularity']:.4f}",
        f"{metrics['cluster/selflabel/modularity']:.4f}",
        kept,
        f"{100 * metrics['cluster/acc']:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", type=Path, nargs="+")
    args = parser.parse_args()
    runs = sorted(p.parent for sweep in args.sweeps for p in sweep.glob("*/metrics.json"))
    header = [
        "run",
        "SCAN acc",
        "self-label acc",
        "change",
        "SCAN modularity",
        "self-label modularity",
        "kept",
        "kept acc",
    ]
    print(markdown_table(header, [row(run) for run in runs]))


if __name__ == "__main__":
    main()
