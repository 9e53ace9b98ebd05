"""`bench/sessionizer_pair.py` on a few seconds of traffic runs end to end: two sessionizers with
and without the deferral, each table equal to one computation of everything (the script exits 1
otherwise), and with the deferral nothing to reconcile.

A smoke test only: nothing here asserts a speed (benchmarks measure, tests do not time).
"""

from __future__ import annotations

import re

import pytest
from hw_testing import run_bench

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_two_sessionizers_benchmark_small_run_keeps_the_tables_exact() -> None:
    output = run_bench("sessionizer_pair.py", "--seconds", "4", "--rounds", "1", "--no-doc")
    names = ("never defers", r"defers \(default\)")
    never, defers = (re.search(rf"^\| {name} \|.*$", output, re.MULTILINE) for name in names)
    assert never and defers, output
    assert never[0].endswith("| yes |") and defers[0].endswith("| yes |")
    assert defers[0].split("|")[5].strip().startswith("0 ")  # identities reconciled
