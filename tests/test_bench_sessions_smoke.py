"""`bench/sessions.py` on a small project runs end to end: a rebuild, cycles over added hours, the
table the cycles kept equal to one computation of everything (the script exits 1 otherwise), and
the consumer with the sessionizer beside it landing every event once.

A smoke test only: nothing here asserts a speed (benchmarks measure, tests do not time).
"""

from __future__ import annotations

import pytest
from hw_testing import run_bench

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.long]


def test_sessions_benchmark_small_run_keeps_the_table_exact() -> None:
    args = ("--events", "20000", "--visitors", "400", "--hours", "2", "--hourly-events", "2000")
    output = run_bench("sessions.py", *args, "--consumer-events", "2000", "--rounds", "1", "--no-doc")
    assert "| table kept by the cycles = one computation of everything | yes" in output
    assert "sessionizer rounds" in output
