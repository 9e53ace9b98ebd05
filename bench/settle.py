"""Waiting for the disk between benchmark runs.

A run that starts straight after another that wrote a table shares the disk with the kernel
writing that table back: the import's ratio to the consumer moved 0.75-1.03x between rounds that
way, and 0.90-0.98x with each run started on a synced disk (docs/benchmarks.md, "Import").
"""

from __future__ import annotations

import os
import time

SETTLE_SECONDS = 3.0


def settle(seconds: float = SETTLE_SECONDS) -> None:
    """Write back what earlier runs wrote, then wait `seconds` for the machine to go quiet."""
    os.sync()
    time.sleep(seconds)
