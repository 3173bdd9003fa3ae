"""The score command's inputs: image paths from files and folders, batches within one input."""

import pytest

from ood_nolabels.inference.inputs import batches_within, image_paths


def test_batches_never_span_two_input_groups():
    assert batches_within([5, 3], 2) == [[0, 1], [2, 3], [4], [5, 6], [7]]
    assert batches_within([4], 4) == [[0, 1, 2, 3]]


def test_image_paths_expand_folders_and_name_what_is_missing(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    for name in ("a/2.png", "a/sub/1.jpg", "a/notes.txt", "b.png"):
        (tmp_path / name).touch()
    assert image_paths([tmp_path / "b.png", tmp_path / "a"]) == [
        tmp_path / "b.png",
        tmp_path / "a" / "2.png",
        tmp_path / "a" / "sub" / "1.jpg",
    ]
    with pytest.raises(FileNotFoundError, match="nowhere.png does not exist"):
        image_paths([tmp_path / "nowhere.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files under"):
        image_paths([tmp_path / "empty"])
