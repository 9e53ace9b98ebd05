"""Fresh parts of the tables written in small steps are compact (docs/schema.md, "Part format").

ClickHouse writes a part of fewer than `min_bytes_for_wide_part` uncompressed bytes (10 MiB by
default) in the compact format, one file for all its columns, and a larger one wide, two files per
column. A consumer's batch of 50,000 events (~50 MB with the SDK's contexts) and a sessionizer
cycle's copy of an hour (100,000 events, ~40 MB) were wide parts of ~30 columns: writing their
files cost more than the rest of the insert. Measured on the embedded engine (bench/sessions.py's
data): a 50,000-row insert into `events` 0.33 s as a wide part, 0.13 s as a compact one; the copy
of an hour into `sessionizer_recent` 0.19 against 0.09 s. Reading the same rows, the sessions
query took the same time from either format (0.25 s).

Raised to 256 MiB for `events`, `sessionizer_recent` and `sessions`: inserts stay compact, and
merges still turn the large parts that queries mostly read into wide ones. A setting of the table,
changed in place: existing parts keep their format (and a merge taking a wide part writes a wide one).
"""

from __future__ import annotations

from collections.abc import Sequence

from .ddl import on_cluster

NUMBER = 8
NAME = "compact_parts"

# Parts below this many uncompressed bytes are written compact.
WIDE_PART_BYTES = 256 * 1024 * 1024
TABLES = ("events", "sessionizer_recent", "sessions")


def statements(database: str, cluster: str | None) -> Sequence[str]:
    return [
        f"ALTER TABLE `{database}`.{table}{on_cluster(cluster)} "
        f"MODIFY SETTING min_bytes_for_wide_part = {WIDE_PART_BYTES}"
        for table in TABLES
    ]
