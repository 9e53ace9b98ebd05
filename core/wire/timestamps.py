"""What a time in an event may look like: the one rule the edge validates with and the consumers
read by.

An event's `timestamp`, `sentAt` and `originalTimestamp`, and a batch's `sentAt`, are ISO-8601
strings as `datetime.fromisoformat` reads them (Python 3.11: `Z`, an offset or none, fractions of a
second, basic and extended forms), at most 64 characters; a time without an offset is UTC. The edge
refuses anything else (docs/ingest-api.md, `invalid_timestamp`) and stores what it accepts as sent;
the consumers read the same strings into aware UTC datetimes to correct clock skew
(consumers/enrich/timestamps.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

MAX_TIMESTAMP_LENGTH = 64
_from_iso = datetime.fromisoformat  # (bound once: this runs up to three times per accepted event)


def read_timestamp(text: str) -> datetime | None:
    """The time `text` states, as written (naive when it names no offset); None when it is not a
    timestamp an event may carry. On the edge's hot path: a valid time costs one length check and
    one fromisoformat."""
    if len(text) > MAX_TIMESTAMP_LENGTH:
        return None
    try:
        return _from_iso(text)
    except ValueError:
        return None


def utc_timestamp(value: object) -> datetime | None:
    """`value` read as a timestamp, as an aware UTC datetime (no offset: UTC); None when it is not a
    string read_timestamp accepts, or lies outside what a UTC datetime can hold (year 1 with a
    positive offset, year 9999 with a negative one). Never raises."""
    if type(value) is not str:
        return None
    parsed = read_timestamp(value)
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return None
