"""The README's headline table holds the numbers the results command generated
(docs/results/digits/results.md), so a number lives in one place and cannot drift."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MEAN_STD = r"\d+\.\d ± \d+\.\d"


def generated_rows() -> dict[tuple[str, str, str, str], str]:
    """(experiment, pseudo_labels, stage1, scorer) -> "mean ± std" of the generated table."""
    text = (ROOT / "docs" / "results" / "digits" / "results.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
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
