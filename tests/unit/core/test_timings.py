"""The timing table of a run's steps."""

from ood_nolabels.core.timings import Timings


def test_timing_table_lists_steps_and_a_total():
    timings = Timings()
    timings.add("simclr-abc", "trained", 12.34)
    timings.add("scan-def", "reused", 0.01)
    lines = timings.table().splitlines()
    assert "simclr-abc" in lines[2] and "trained" in lines[2] and "12.3" in lines[2]
    assert "reused" in lines[3]
    assert lines[-1].startswith("| total")
