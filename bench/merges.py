"""Waiting out the background merges of a benchmark's bulk insert before timing anything: they
would share the cores with what is timed."""

from __future__ import annotations

import time
from typing import Any


def settle_merges(client: Any, database: str, quiet_checks: int = 6, timeout: float = 600.0) -> float:
    """Seconds until no merge of `database` has run for `quiet_checks` half-seconds."""
    started, quiet = time.perf_counter(), 0
    sql = "SELECT count() FROM system.merges WHERE database = {database:String}"
    while quiet < quiet_checks and time.perf_counter() - started < timeout:
        running = client.query(sql, parameters={"database": database}).result_rows[0][0]
        quiet = 0 if running else quiet + 1
        time.sleep(0.5)
    return time.perf_counter() - started
