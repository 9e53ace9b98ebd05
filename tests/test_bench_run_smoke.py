"""`bench/run --quick` runs end to end: the whole node (edge, NATS, consumer, embedded ClickHouse)
under wrk for each scenario, with the baselines, every request answered 2xx and the stream drained.

A smoke test only: nothing here asserts a speed (benchmarks measure, tests do not time).
"""

from __future__ import annotations

import shutil

import pytest
from hw_testing import run_bench

pytestmark = [
    pytest.mark.services,
    pytest.mark.slow,
    pytest.mark.long,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)"),
]


def test_capacity_benchmark_quick_run_is_clean() -> None:
    output = run_bench("run", "--quick", timeout=600)
    assert "quick: every request answered 2xx" in output
    for scenario in ("browser", "server", "single"):
        assert f"  {scenario} " in output  # each scenario was measured
