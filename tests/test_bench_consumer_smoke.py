"""`bench/consumer.py --quick` runs end to end: a pre-filled stream through the real consumer and
through the raw-insert baseline, every event landing exactly once in each.

A smoke test only: nothing here asserts a speed (benchmarks measure, tests do not time).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_consumer_benchmark_quick_run_lands_every_event_once() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "consumer.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert "20,000 rows, 20,000 distinct messageIds" in result.stdout
