"""`bench/patterns.py --quick` runs mining, drivers and the next-step model end to end on a small
generated data set and prints its table.

A smoke test only: nothing here asserts a speed (benchmarks measure, tests do not time).
"""

from __future__ import annotations

from hw_testing import run_bench


def test_patterns_benchmark_quick_run_prints_its_table() -> None:
    output = run_bench("patterns.py", "--quick")
    assert "| 3,000 |" in output and "top-3 model / baseline" in output
