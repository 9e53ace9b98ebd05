"""`bench/funnels.py` on a small data set runs end to end, its ordered funnel's counts equal to
windowFunnel's, its unordered funnel's to a plain count of distinct steps per window, those with
an optional step or a step window fitting the plain funnel's, and its paths' people equal to a
plain count (the script exits 1 otherwise).

A smoke test only: nothing here asserts a speed (benchmarks measure, tests do not time).
"""

from __future__ import annotations

import pytest
from hw_testing import run_bench

pytestmark = pytest.mark.services


def test_funnels_benchmark_small_run_agrees_with_window_funnel() -> None:
    output = run_bench("funnels.py", "--events", "20000", "--people", "2000", "--rounds", "1", "--no-doc")
    assert "| ordered (" in output and "| strict (" in output
    assert "| unordered (" in output  # its counts equal to distinct steps per window (else exit 1)
    # The per-start form's rows, their counts checked against the plain funnel's (else exit 1).
    assert "| ordered, step 3 optional (" in output and "| ordered, step 3 within 5 min (" in output
    # Paths in both forms, the same rows, their people equal to a plain count (else exit 1).
    assert "| as the API answers it | numbered |" in output and "| the named form alone | named |" in output


def test_the_floor_benchmark_small_run_gives_the_same_people_in_every_form() -> None:
    output = run_bench(
        "funnels_floor.py", "--events", "20000", "--people", "2000", "--rounds", "1", "--no-doc"
    )
    # The four forms' people per step are equal on this data (the script exits 1 otherwise).
    for form in ("windowFunnel", "ours", "copies kept", "time and mask only"):
        assert f"| {form} | " in output
