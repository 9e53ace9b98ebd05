"""`bench/sessions_floor.py` on a small project runs end to end: a rebuild, cycles, and each
statement of a cycle's floor timed, reported against the rebuild.

A smoke test only: nothing here asserts a speed (benchmarks measure, tests do not time).
"""

from __future__ import annotations

import pytest
from hw_testing import run_bench

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_sessions_floor_benchmark_small_run_reports_every_step() -> None:
    args = ("--events", "40000", "--visitors", "1000", "--hourly-events", "4000", "--hours", "1")
    output = run_bench("sessions_floor.py", *args, "--no-doc")
    for step in (
        "floor 1: identify",
        "floor 2: when each one's last session ended",
        "floor 3: copy",
        "floor 4: compute and write",
        "fixed cost",
        "1 + 2 + 3 + 4",
    ):
        assert step in output, output
    assert "The floor with the recent copy:" in output
