"""The README's headline table holds the numbers the results command generated
(docs/results/digits/results.md), so a number lives in one place and cannot drift."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MEAN_STD = r"\d+\.\d ± \d+\.\d"


def table_cells(line: str) -> list[str]:
    """The stripped cells of one markdown table row."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def generated_rows() -> dict[tuple[str, str, str, str], str]:
    """(experiment, pseudo_labels, stage1, scorer) -> "mean ± std" of the generated table."""
    text = (ROOT / "docs" / "results" / "digits" / "results.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = table_cells(line)
        if len(cells) == 5 and re.fullmatch(MEAN_STD + r" \(\d+\)", cells[4]):
            rows[tuple(cells[:4])] = cells[4].rsplit(" (", 1)[0]
    return rows


def readme_rows() -> dict[tuple[str, str, str], tuple[str, str]]:
    """(experiment, pseudo_labels, stage1) -> (kNN, Mahalanobis) of the README's headline table."""
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        command = re.search(r"`(\+experiment=[^`]+)`", line)
        values = re.findall(MEAN_STD, line)
        if command and len(values) == 2:
            settings = dict(token.lstrip("+").split("=", 1) for token in command[1].split())
            key = tuple(
                settings.get(name, "") for name in ("experiment", "pseudo_labels", "stage1")
            )
            rows[key] = (values[0], values[1])
    return rows


def test_every_readme_number_is_the_generated_one():
    generated, readme = generated_rows(), readme_rows()
    assert len(readme) == 6
    for key, (knn, mahalanobis) in readme.items():
        assert generated[(*key, "knn")] == knn, key
        assert generated[(*key, "mahalanobis")] == mahalanobis, key


def generated_fashion_mnist() -> dict[tuple[str, str, str], str]:
    """(experiment, scorer, normal classes) -> "mean ± std" of the protocol's targets tables."""
    rows = {}
    for name in ("targets.md", "targets_mahalanobis.md"):
        lines = (ROOT / "docs" / "results" / "fashion_mnist" / name).read_text().splitlines()
        header = table_cells(lines[0])
        for line in lines[2:]:
            cells = table_cells(line)
            if cells[0].endswith(" AUROC"):
                experiment, scorer, _ = cells[0].split()
                for classes, cell in zip(header[1:], cells[1:], strict=True):
                    rows[(experiment, scorer, classes)] = cell.rsplit(" (", 1)[0]
    return rows


def readme_fashion_mnist() -> dict[tuple[str, str, str], str]:
    """The same keys for the README's Fashion-MNIST table ("kNN / Mahalanobis" cells)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith("| normal classes (OOD")]
    classes = re.findall(r"\[[\d,]+\]", lines[start])
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        experiment = re.search(r"\(`(fmnist\w*)`\)", line)
        assert experiment, f"a README row names no preset as (`fmnist...`): {line}"
        for split, cell in zip(classes, table_cells(line)[1:], strict=True):
            values = re.fullmatch(f"({MEAN_STD}) / ({MEAN_STD})", cell)
            assert values, f"README cell {cell!r} is not 'kNN mean ± std / Mahalanobis mean ± std'"
            rows[(experiment[1], "knn", split)] = values[1]
            rows[(experiment[1], "mahalanobis", split)] = values[2]
    return rows


def test_readme_fashion_mnist_table_is_the_generated_one():
    readme = readme_fashion_mnist()
    assert len(readme) == 3 * 2 * 3  # experiments x scorers x splits
    generated = generated_fashion_mnist()
    assert readme == {key: generated[key] for key in readme}
