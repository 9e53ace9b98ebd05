"""`bench/faults.py` runs end to end: its baseline scenario starts a real stack (nats-server,
control, edge, consumer on the embedded engine), sends events and counts every acknowledged one
stored. The fault scenarios take minutes each and run with the benchmarks, not here; each fault has
its own test.

A smoke test only: nothing here asserts a speed (benchmarks measure, tests do not time).
"""

from __future__ import annotations

import pytest
from hw_testing import run_bench

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_fault_drill_baseline_counts_every_acknowledged_event_stored() -> None:
    output = run_bench("faults.py", "--quick", "--only", "baseline")
    [row] = [line for line in output.splitlines() if line.startswith("| baseline ")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    requests, acknowledged, stored, lost, doubled = (int(c.replace(",", "")) for c in cells[2:7])
    assert requests > 0 and acknowledged > 0
    assert (stored, lost, doubled) == (acknowledged, 0, 0)
