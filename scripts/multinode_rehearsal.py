"""Rehearse a 2-node DDP run on one machine: 2 "nodes" x 1 CPU process, one shared artifact cache.

Each node is its own command, started the way a cluster without SLURM starts it (Lightning's
general-purpose cluster environment: ``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``,
``LOCAL_RANK``), over gloo on localhost. The same experiment also runs as one node with 2
processes (``trainer=ddp_cpu``). Checked, and printed as a table:

- both nodes exit 0 and every stage of the shared artifact cache was trained once (one directory
  per stage, no leftover work directories), under the same stage keys as the single-node run;
- only global rank 0 wrote results: node 1's run directory holds none of the files a run leaves
  (``metrics.json``, ``scores.csv``, ``detector.pt``, ``config_resolved.yaml``, ``plots/``);
- node 0's metrics equal the single-node run's (the largest difference is printed).

Usage: ``python scripts/multinode_rehearsal.py [--out DIR] [--tolerance 0] [--timeout 600]
[overrides ...]`` (about a minute on 2 cores; exits 1 when a check fails or the nodes hang).
What this cannot show (NCCL, real network, a shared file system's locks) is listed in
docs/multi-gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPERIMENT = ("+experiment=ours_synthetic", "logger=none")
# What a run leaves in its run directory (train.py / report): none of it may come from rank 1.
RESULT_FILES = ("metrics.json", "scores.csv", "detector.pt", "config_resolved.yaml", "plots")
NODES = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_command(
    run_dir: Path, artifacts: Path, trainer: list[str], extra: list[str]
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ood_nolabels.train",
        *EXPERIMENT,
        *trainer,
        f"hydra.run.dir={run_dir}",
        f"paths.artifact_dir={artifacts}",
        *extra,
    ]


def node_environment(node_rank: int, port: int) -> dict[str, str]:
    """A node's variables as a cluster without SLURM sets them (one process per node)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return env | {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "NODE_RANK": str(node_rank),
        "LOCAL_RANK": "0",
        "OMP_NUM_THREADS": "1",  # two processes share this machine's cores
    }


def run_single_node(out: Path, extra: list[str]) -> tuple[float, Path]:
    run_dir = out / "single_node"
    command = train_command(run_dir, out / "artifacts_single", ["trainer=ddp_cpu"], extra)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    with open(out / "single_node.log", "w") as log:
        code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = "\n".join((out / "single_node.log").read_text().splitlines()[-6:])
        raise SystemExit(f"the single-node run failed (exit {code}):\n{tail}\nfull log: {out}")
    return time.perf_counter() - start, run_dir


def run_nodes(out: Path, extra: list[str], timeout: float) -> tuple[float, list[Path]]:
    port = free_port()
    trainer = ["trainer=ddp_cpu", "trainer.devices=1", f"trainer.num_nodes={NODES}"]
    run_dirs = [out / f"node{rank}" for rank in range(NODES)]
    logs = [open(out / f"node{rank}.log", "w") for rank in range(NODES)]  # noqa: SIM115
    start = time.perf_counter()
    processes = [
        subprocess.Popen(
            train_command(run_dirs[rank], out / "artifacts_shared", trainer, extra),
            env=node_environment(rank, port),
            stdout=logs[rank],
            stderr=subprocess.STDOUT,
        )
        for rank in range(NODES)
    ]
    try:
        codes = [process.wait(timeout=timeout) for process in processes]
    except subprocess.TimeoutExpired:  # e.g. a node waiting for a lock its peer never releases
        codes = None
    finally:
        for process in processes:
            process.kill()
        for log in logs:
            log.close()
    if codes is None:
        raise SystemExit(
            f"the nodes did not finish in {timeout:.0f} s (a deadlock?); see {out}/node*.log"
        )
    if any(codes):
        raise SystemExit(f"node exit codes {codes}; see {out}/node*.log")
    return time.perf_counter() - start, run_dirs


def stages(artifacts: Path) -> list[str]:
    """Every entry of an artifact cache except the locks (stage directories, and any work or
    quarantined directory a double training would leave)."""
    return sorted(p.name for p in artifacts.iterdir() if not p.name.endswith(".lock"))


def metrics_difference(first: dict[str, object], second: dict[str, object]) -> float:
    """The largest difference of the numbers; any other entry (a file name) must be equal."""
    if set(first) != set(second):
        raise SystemExit(f"the runs logged different metrics: {sorted(set(first) ^ set(second))}")
    numbers = [name for name, value in first.items() if isinstance(value, int | float)]
    if any(first[name] != second[name] for name in first.keys() - numbers):
        return float("inf")
    return max(abs(first[name] - second[name]) for name in numbers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="work directory (default: a temp)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="largest metric difference")
    parser.add_argument("--timeout", type=float, default=600, help="seconds the nodes may take")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="multinode_"))
    out.mkdir(parents=True, exist_ok=True)

    single_seconds, single_dir = run_single_node(out, args.overrides)
    nodes_seconds, node_dirs = run_nodes(out, args.overrides, args.timeout)

    shared, single = stages(out / "artifacts_shared"), stages(out / "artifacts_single")
    leaked = sorted(name for name in RESULT_FILES if (node_dirs[1] / name).exists())
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (single_dir, node_dirs[0])]
    difference = metrics_difference(*metrics)
    auroc = {name: value for name, value in metrics[1].items() if name.endswith("/auroc")}
    checks = [
        ("stages trained once, same keys as 1 node x 2", shared == single, ", ".join(shared)),
        ("node 1 wrote no results", not leaked, ", ".join(leaked) or "none"),
        (
            "metrics equal 1 node x 2 processes",
            difference <= args.tolerance,
            f"max |diff| {difference:.3g}",
        ),
    ]
    print("| check | passed | detail |\n|---|---|---|")
    for name, passed, detail in checks:
        print(f"| {name} | {'yes' if passed else 'NO'} | {detail} |")
    print(f"\n1 node x 2 processes: {single_seconds:.0f} s", end="; ")
    print(f"2 nodes x 1 process: {nodes_seconds:.0f} s")
    for name, value in sorted(auroc.items()):
        print(f"{name}: {value:.4f}")
    print(f"logs and run directories: {out}")
    return 0 if all(passed for _, passed, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
