"""The per-image scores file."""

import csv

import pytest
from helpers import fake_result

from ood_nolabels.data.datamodule import NORMAL_TEST
from ood_nolabels.report.files import write_scores


def test_scores_file_names_each_image(tmp_path, datamodule):
    result = fake_result(datamodule)
    write_scores(result.evaluation, datamodule.images, tmp_path)
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert set(rows[0]) == {"image", "split", "index", "scorer", "score"}
    first_test = next(r for r in rows if r["split"] == NORMAL_TEST)
    assert first_test["image"] == f"{NORMAL_TEST}/0"  # in-memory images: split/index
    assert float(first_test["score"]) == pytest.approx(
        float(result.evaluation.scores["knn"][NORMAL_TEST][0])
    )
    assert len(rows) == sum(len(s) for s in result.evaluation.scores["knn"].values())
