"""Settings of the consumer role. Built by `ops/` from flags and HEADWATER_* variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .enrich import default_geo_database

# Rows held over all projects before they are written: large parts mean less merging for
# ClickHouse (docs/benchmarks.md#consumer); ~1 KB of memory per row.
DEFAULT_MAX_BATCH_ROWS = 50_000


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    clickhouse_url: str
    durable_name: str = "hw-clickhouse"
    fetch_batch: int = 500
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    # How long a group of pulled messages smaller than fetch_batch waits for more before it is
    # processed: each group becomes a Native block per project, and the engine takes blocks of a
    # few dozen rows at ~3x the CPU per row of blocks of thousands (docs/consumers.md).
    group_linger_seconds: float = 0.05
    # The batching span of a project whose config is not known (yet); projects set their own.
    flush_interval_seconds: float = 1.0
    # Above the longest batching span a project may set (60 s) plus an insert's time.
    ack_wait_seconds: float = 120.0
    max_ack_pending: int = 20_000
    max_deliver: int = 20
    retry_delay_seconds: float = 2.0
    # Inserts failing (ClickHouse unreachable, full, ...) for longer than this make /readyz 503.
    unready_after_retrying_seconds: float = 30.0
    # Processes that decode, enrich and encode (consumers/processing.py); None: default_workers();
    # 0: in the consumer's own process.
    workers: int | None = None
    # A MaxMind-format City database; None: the default data installed with headwater (if any);
    # "": no geolocation.
    geoip_database: str | None = None
    # The operator's data-centre ranges (one CIDR a line, or CSV: docs/privacy.md): events from them
    # are flagged `datacentre` in projects that keep `bots.datacentre` on; None: no such check.
    datacentre_ranges: str | None = None
    # Hosts of referrer spammers (one a line) added to the list headwater ships; None: that list alone.
    referrer_spam_file: str | None = None
    # Where /healthz, /readyz and /metrics are served; None: not at all (as in `up`).
    host: str = "127.0.0.1"
    port: int | None = None
    # The cluster the import writer creates and grows imported tables on (consumers/imports.py).
    clickhouse_cluster: str | None = None
    # The import writer's durable on HW_IMPORTS; None: the consumer role runs no import writer.
    imports_durable_name: str | None = "hw-imports"

    def worker_count(self) -> int:
        return default_workers() if self.workers is None else self.workers

    def geoip_path(self) -> Path | None:
        if self.geoip_database is None:
            return default_geo_database()
        return Path(self.geoip_database) if self.geoip_database else None

    def bot_files(self) -> tuple[Path | None, Path | None]:
        """The operator's data-centre ranges and referrer-spam file, each None when not given."""
        return (
            Path(self.datacentre_ranges) if self.datacentre_ranges else None,
            Path(self.referrer_spam_file) if self.referrer_spam_file else None,
        )


def default_workers() -> int:
    """One per core this process may run on; none on a single core, where a worker would only add
    the hand-over (measured: one worker on two cores is slower than none, two are faster)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores if cores > 1 else 0
