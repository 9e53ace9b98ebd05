"""Segment's clock-skew correction of event times.

A device's clock can be off by hours. Segment libraries stamp each event when it happens
(`timestamp`) and the batch when it is sent (`sentAt`), both on the device's clock; the collector
notes when the request arrived (`received_at`, on ours). The difference `sentAt - timestamp` is
exact whatever the device clock says, so `received_at - (sentAt - timestamp)` is when the event
happened on our clock: Segment's own rule for its `timestamp` field. The times are read with the
wire's rule (core/wire/timestamps.py utc_timestamp).
"""

from __future__ import annotations

from datetime import datetime, timedelta

# An event whose corrected time lies further ahead than this is not believed (a sentAt earlier than
# its timestamp by more than a minute): its arrival time is used instead.
MAX_FUTURE = timedelta(minutes=1)


def skew_corrected(happened: datetime | None, sent: datetime | None, received: datetime) -> datetime:
    """When the event happened, on the collector's clock, from times already read (aware, UTC).

    With both the event's time and `sent`: `received - (sent - happened)`; with its time only: that
    time as sent; with neither: `received`. A result more than a minute past `received` (a
    nonsensical pair) falls back to `received`."""
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
