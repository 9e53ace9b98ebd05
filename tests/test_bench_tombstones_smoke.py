"""`bench/tombstones.py` on a small workload runs end to end, and both ways of handing tombstones to
the workers leave out exactly the deleted people's events (the script exits 1 otherwise).

A smoke test only: nothing here asserts a speed (benchmarks measure, tests do not time).
"""

from __future__ import annotations

from hw_testing import run_bench


def test_tombstones_benchmark_small_run_leaves_out_the_deleted_peoples_events() -> None:
    output = run_bench("tombstones.py", "--subjects", "1000", "--events", "5000", "--rounds", "1")
    assert "left out as deleted people's, in each arm with tombstones:" in output
    for arm in ("none", "files", "pickled"):
        assert f"| {arm} | " in output
