"""The built wheel carries the configs and the commands: a non-editable install runs anywhere."""

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_ships_the_configs_and_runs_from_any_directory(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info next to it
    shutil.copytree(
        ROOT / "ood_nolabels", source / "ood_nolabels", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("ood_nolabels-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = configparser.ConfigParser()
        scripts.read_string(archive.read(entry_points).decode())
    shipped = {n for n in names if n.startswith("ood_nolabels/conf/") and n.endswith(".yaml")}
    package = ROOT / "ood_nolabels"
    expected = {f"ood_nolabels/{p.relative_to(package)}" for p in package.glob("conf/**/*.yaml")}
    assert "ood_nolabels/conf/experiment/digits.yaml" in shipped
    assert shipped == expected
    assert dict(scripts["console_scripts"]) == {
        "ood-train": "ood_nolabels.train:main",
        "ood-score": "ood_nolabels.score:main",
        "ood-results": "ood_nolabels.results:main",
    }

    target = tmp_path / "target"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import importlib.util; print(importlib.util.find_spec('ood_nolabels').origin)"
    where = subprocess.run(
        [sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, env=env
    )
    assert where.stdout.strip() == str(target / "ood_nolabels" / "__init__.py"), where.stderr
    commands = {  # the module, and the console script (Hydra then reads the package's configs)
        "module": [sys.executable, "-m", "ood_nolabels.train"],
        "script": [str(target / "bin" / "ood-train")],
    }
    for how, command in commands.items():
        job = subprocess.run(
            [*command, "+experiment=digits", "--cfg", "job"],
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert job.returncode == 0, (how, job.stderr[-3000:])
        assert "task_name: digits" in job.stdout and "K: 6" in job.stdout, how
