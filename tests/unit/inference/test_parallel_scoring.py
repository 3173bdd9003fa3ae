"""``ood-score --devices N``: data-parallel extraction gives the one-process CSV, byte for byte."""

from __future__ import annotations

import pytest
import torch
from helpers import small_detector

from ood_nolabels import score
from ood_nolabels.inference.extract import _split, process_devices


@pytest.fixture
def one_thread():
    """Every process with one torch thread: float sums then run in the same order everywhere."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_two_processes_write_the_same_csv_as_one(tmp_path, one_thread):
    detector, images = small_detector()
    detector.save(tmp_path / "detector.pt")
    for group, count in (("a", 23), ("b", 14)):  # two inputs: batches never span them
        (tmp_path / group).mkdir()
        for index, image in enumerate(images[:count]):
            image.save(tmp_path / group / f"{index:02d}.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"not an image")
    outputs = {}
    for devices in (1, 2):
        outputs[devices] = tmp_path / f"scores_{devices}.csv"
        argv = [str(tmp_path / "detector.pt"), str(tmp_path / "a"), str(tmp_path / "b")]
        argv += ["-o", str(outputs[devices]), "--batch-size", "4", "--no-progress"]
        assert score.main([*argv, "--devices", str(devices)]) == 0
    one, two = outputs[1].read_text(), outputs[2].read_text()
    assert one == two
    assert len(one.splitlines()) == 1 + 23 + 14  # header, every readable image, in input order
    assert "broken.png" not in one


def test_shards_are_contiguous_and_balanced():
    batches = [[i] for i in range(7)]
    runs = _split(batches, 3)
    assert [len(r) for r in runs] == [3, 2, 2]
    assert [b for run in runs for b in run] == batches
    assert _split(batches[:1], 2) == [[[0]], []]  # more processes than batches: idle ones


def test_devices_are_checked_before_any_work():
    assert process_devices(torch.device("cpu"), 3) == ["cpu"] * 3
    with pytest.raises(ValueError, match="--devices must be >= 1"):
        process_devices(torch.device("cpu"), 0)
    if torch.cuda.device_count() == 0:
        with pytest.raises(ValueError, match="only 0 GPU"):
            process_devices(torch.device("cuda"), 2)


def test_a_device_count_below_one_stops_before_the_detector_is_read(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        score.main([str(tmp_path / "missing.pt"), str(tmp_path), "--devices", "0"])
    assert stop.value.code == 2
    assert "--devices must be >= 1, got 0" in capsys.readouterr().err
