"""The sessionizer's copy of recent events: what a cycle reads instead of `events`.

`events` is sorted for de-duplication, `(type, event, message_id)`, so the events of a time range
lie in every granule of a merged part, and a cycle reading the last hours of a few thousand
visitors decompressed the whole partition (measured: ~0.5 s of a 1.7 s cycle at 10M events,
growing with the month). `sessionizer_recent` holds the fields the sessions computation reads,
sorted by hour: a cycle reads the hours it needs and nothing older.

- Written only by the sessionizer: each cycle appends the rows inserted into `events` since its
  watermark (a first cycle copies the last days), so its content is a function of the events up to
  the watermark; the watermark records from when it is complete (docs/sessions.md, "Cycles").
- A ReplacingMergeTree on `(hour, message_id, received_at, request_id)`: a stored copy appended
  twice (a cycle redone after a crash, two sessionizers at once) is one row once merged, and the
  computation counts a message once anyway.
- Rows expire `RECENT_KEEP` after their timestamp (TTL), a day beyond what a cycle trusts.

And a minmax index on `events.inserted_at`, granule by granule: a cycle looks for the rows inserted
since its watermark, and the index skips the granules (the whole parts, mostly) inserted before.
Built for the rows already stored too (a mutation, at migration time).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from . import m0002_enrichment
from .ddl import on_cluster, replacing_engine

NUMBER = 4
NAME = "sessionizer_recent"

_LOW = "LowCardinality(String)"
_TIME = "DateTime64(3, 'UTC')"
_ENRICHED = dict(m0002_enrichment.COLUMNS)
_ENRICHED_FIELDS = (
    "page_url", "page_host", "page_path", "referrer", "referrer_host", "utm_source", "utm_medium",
    "utm_campaign", "utm_term", "utm_content", "browser", "os", "device_type", "country", "region",
    "city", "is_bot",
)  # fmt: skip
# The fields of an event a session is computed from, as the sessions computation names them; each
# is the events column of that name and type but `client_session_id`, read from `context` (the
# sessions query has the expression).
SESSION_EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("timestamp", _TIME),
    ("message_id", "String"),
    ("received_at", _TIME),
    ("request_id", "String"),
    ("client_session_id", "String"),
    ("type", _LOW),
    ("anonymous_id", "String"),
    ("user_id", "String"),
    *((name, _ENRICHED[name]) for name in _ENRICHED_FIELDS),
)
RECENT_COLUMNS: tuple[tuple[str, str], ...] = (*SESSION_EVENT_COLUMNS, ("inserted_at", _TIME))
RECENT_KEEP = timedelta(days=3)


def statements(database: str, cluster: str | None) -> Sequence[str]:
    columns = ",\n            ".join(f"{name} {kind}" for name, kind in RECENT_COLUMNS)
    keep_hours = int(RECENT_KEEP / timedelta(hours=1))
    cluster_clause = on_cluster(cluster)
    return [
        f"ALTER TABLE `{database}`.events{cluster_clause} "
        "ADD INDEX IF NOT EXISTS ix_inserted_at inserted_at TYPE minmax GRANULARITY 1",
        f"ALTER TABLE `{database}`.events{cluster_clause} MATERIALIZE INDEX ix_inserted_at "
        "SETTINGS mutations_sync = 2",
        f"""
        CREATE TABLE IF NOT EXISTS `{database}`.sessionizer_recent{cluster_clause}
        (
            {columns}
        )
        ENGINE = {replacing_engine(cluster)}
        ORDER BY (toStartOfHour(timestamp), message_id, received_at, request_id)
        TTL timestamp + INTERVAL {keep_hours} HOUR
        """,
    ]
