"""Event times as aware UTC datetimes, and Segment's clock-skew correction.

A device's clock can be off by hours. Segment libraries stamp each event when it happens
(`timestamp`) and the batch when it is sent (`sentAt`), both on the device's clock; the collector
notes when the request arrived (`received_at`, on ours). The difference `sentAt - timestamp` is
exact whatever the device clock says, so `received_at - (sentAt - timestamp)` is when the event
happened on our clock: Segment's own rule for its `timestamp` field.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# An event whose corrected time lies further ahead than this is not believed (a sentAt earlier than
# its timestamp by more than a minute): its arrival time is used instead.
MAX_FUTURE = timedelta(minutes=1)


def parse_timestamp(value: object) -> datetime | None:
    """An ISO-8601 string (`Z`, an offset, or none: read as UTC) or a datetime as an aware UTC
    datetime; None when absent or unreadable. Never raises."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        return None


def corrected_timestamp(timestamp: object, sent_at: object, received_at: datetime) -> datetime:
    """When the event happened, on the collector's clock.

    With both `timestamp` and `sentAt`: `received_at - (sentAt - timestamp)`; with `timestamp` only:
    `timestamp` as sent; with neither: `received_at`. A result more than a minute past `received_at`
    (a nonsensical pair) falls back to `received_at`. Raises ValueError only for an unusable
    `received_at`, which the collector itself wrote.
    """
    received = parse_timestamp(received_at)
    if received is None:
        raise ValueError(f"received_at {received_at!r} is not a usable time")
    return skew_corrected(parse_timestamp(timestamp), parse_timestamp(sent_at), received)


def skew_corrected(happened: datetime | None, sent: datetime | None, received: datetime) -> datetime:
    """corrected_timestamp for times already parsed (aware, UTC)."""
    if happened is None:
        return received
    if sent is not None:
        try:
            happened = received - (sent - happened)
        except OverflowError:
            return received
    if happened - received > MAX_FUTURE:
        return received
    return happened
