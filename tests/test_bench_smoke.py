"""`bench/edge.py --quick` runs end to end: every target (the headwater edge with 1 and 2 workers,
the bare Quart and bare ASGI baselines) answers every wrk request with a 2xx.

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
    pytest.mark.skipif(
        shutil.which("wrk") is None,
        reason="wrk is not installed (apt-get install -y wrk): bench/edge.py needs it",
    ),
]


def test_edge_benchmark_quick_run_is_clean() -> None:
    assert "every target answered 2xx only" in run_bench("edge.py", "--quick")
