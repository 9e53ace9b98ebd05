"""The generator's journeys written into the embedded ClickHouse the way the consumer writes them
(an envelope per 500 events, `envelope_rows` with the consumer's enrichment, `ClickHouseWriter`
with a deduplication token per batch), and read back through the patterns API's reader
(source.py, the read-only executor). Used by `bench/patterns.py --clickhouse`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from headwater.analytics.patterns.journeys import Limits
from headwater.analytics.patterns.source import journeys_of_row, journeys_query, step_text
from headwater.consumers.enrich import Enricher
from headwater.consumers.rows import envelope_rows
from headwater.consumers.wire import decode_envelope
from headwater.consumers.writer import ClickHouseWriter
from headwater.control.clickhouse import connect
from headwater.control.query import QueryLimits, ReadOnlyQueries
from headwater.core.migrations import apply_migrations
from headwater.core.projects.project import database_name
from headwater.core.wire.envelope import Envelope, pack

PROJECT = "bench_patterns"
EVENTS_PER_ENVELOPE = 500
# Recent times: a TTL already expired at insert time would remove rows at merge.
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
RANGE = (BASE - timedelta(hours=1), BASE + timedelta(days=1))


def events_of(journeys: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """Journey i as visitor i's events a second apart, starting anywhere in the day after BASE."""
    events = []
    for index, journey in enumerate(journeys):
        start = BASE + timedelta(seconds=(index * 7919) % 80_000)
        for position, step in enumerate(journey):
            event: dict[str, Any] = {
                "anonymousId": f"v{index}",
                "messageId": f"{index}-{position}",
                "timestamp": (start + timedelta(seconds=position)).isoformat(),
            }
            if step.startswith("/"):
                event |= {"type": "page", "properties": {"path": step}, "context": {"page": {"path": step}}}
            else:
                event |= {"type": "track", "event": step}
            events.append(event)
    return events


def write(work: Path, journeys: Sequence[Sequence[str]]) -> tuple[str, float, int]:
    """The chdb URL holding `journeys`, the seconds the consumer's path took, the events written."""
    url = f"chdb://{work / 'ch'}"
    client = connect(url)
    apply_migrations(client, database_name(PROJECT))
    writer, enricher = ClickHouseWriter(client), Enricher(None)
    events = events_of(journeys)
    started = time.perf_counter()
    received = datetime.now(UTC).isoformat()
    for at in range(0, len(events), EVENTS_PER_ENVELOPE):
        request_id = uuid.uuid4().hex
        body = pack(
            Envelope(PROJECT, request_id, received, events[at : at + EVENTS_PER_ENVELOPE], "secret").encode()
        )
        rows = envelope_rows(decode_envelope(body), enricher)
        writer.insert(PROJECT, rows, request_id)
    seconds = time.perf_counter() - started
    client.close()
    return url, seconds, len(events)


def read(url: str, limits: Limits) -> tuple[tuple[tuple[str, ...], ...], float]:
    """Every visitor's journey through the API's reader, as the generator's steps, and the seconds."""
    queries = ReadOnlyQueries(url, limits=QueryLimits(timeout_seconds=300))
    started = time.perf_counter()
    built = journeys_query(database_name(PROJECT), "people", *RANGE, (), limits)
    result = queries.run_built(PROJECT, built.sql, built.parameters)
    journeys = journeys_of_row(dict(zip(result.columns, result.rows[0], strict=True)), limits)
    seconds = time.perf_counter() - started
    queries.close()
    # The generator names pages by path and events by name: its own steps, for recall and precision.
    return tuple(tuple(step_text(s) for s in j) for j in journeys.journeys), seconds
