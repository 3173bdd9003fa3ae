"""Wall time of each step of a run, printed as a table at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ood_nolabels.core.tables import markdown_table


@dataclass
class Timings:
    """One row per step (a stage trained or reused, a model scored, the figures drawn)."""

    rows: list[tuple[str, str, float]] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)

    def add(self, step: str, outcome: str, seconds: float) -> None:
        self.rows.append((step, outcome, seconds))

    @contextmanager
    def measure(self, step: str, outcome: str) -> Iterator[None]:
        """Time the ``with`` block as one row."""
        start = time.perf_counter()
        yield
        self.add(step, outcome, time.perf_counter() - start)

    def table(self) -> str:
        total = time.perf_counter() - self.start
        rows = [[step, outcome, f"{seconds:.1f}"] for step, outcome, seconds in self.rows]
        return markdown_table(
            ["step", "outcome", "seconds"], [*rows, ["total", "", f"{total:.1f}"]]
        )
