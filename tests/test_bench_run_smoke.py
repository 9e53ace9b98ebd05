"""`bench/run --quick` runs end to end: the whole node (edge, NATS, consumer, embedded ClickHouse)
under wrk for each scenario, with the baselines, every request answered 2xx and the stream drained.

A smoke test only: nothing here asserts a speed (benchmarks measure, tests do not time).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.services,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)"),
]


def test_capacity_benchmark_quick_run_is_clean() -> None:
    result = subprocess.run(
        [str(ROOT / "bench" / "run"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert "quick: every request answered 2xx" in result.stdout
    for scenario in ("browser", "server", "single"):
        assert f"  {scenario} " in result.stdout  # each scenario was measured
