"""`bench/consumer.py --quick` runs end to end: a pre-filled stream through the real consumer and
through the raw-insert baseline, every event landing exactly once in each.

A smoke test only: nothing here asserts a speed (benchmarks measure, tests do not time).
"""

from __future__ import annotations

import pytest
from hw_testing import run_bench

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_consumer_benchmark_quick_run_lands_every_event_once() -> None:
    assert "20,000 rows, 20,000 distinct messageIds" in run_bench("consumer.py", "--quick")
