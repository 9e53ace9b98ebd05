"""Segment events, as libraries send them and as Segment's archives (its S3/GCS JSON-lines objects)
hold them, made into what the edge takes for an imported event.

An archived event is a Segment event with fields Segment added on receipt (`receivedAt`,
`projectId`, `version`, ...). What changes on the way in:

- `timestamp` is kept as the event's time: Segment's own, already corrected for clock skew. Without
  one, `originalTimestamp`, then `receivedAt`, then `sentAt` stands in; an event with none of them
  is refused (it would be stored at the time of the import).
- `sentAt` is left out: the consumers correct clock skew as `received_at - (sentAt - timestamp)`,
  which for a past event would move it to the time of the import (consumers/enrich/timestamps.py).
- Fields the edge does not know (`receivedAt`, `projectId`, `writeKey`, Jitsu's `requestIp`...)
  are left out; Jitsu's `requestIp` becomes `context.ip` when the context names none.
"""

from __future__ import annotations

from typing import Any

from .refusal import LineRefused

# What the edge stores of an event (edge/wire.py SegmentEvent), less sentAt and writeKey.
KEPT_FIELDS = frozenset(
    {
        "type",
        "event",
        "name",
        "category",
        "userId",
        "anonymousId",
        "groupId",
        "previousId",
        "messageId",
        "timestamp",
        "originalTimestamp",
        "channel",
        "properties",
        "traits",
        "context",
        "integrations",
        "_metadata",
        "version",
    }
)
# Where an event's time is read, in order of preference.
TIME_FIELDS = ("timestamp", "originalTimestamp", "receivedAt", "sentAt")


def event_time(record: dict[str, Any], fields: tuple[str, ...] = TIME_FIELDS) -> object:
    """The first of `fields` that `record` holds (not null, not empty); LineRefused when none."""
    for field in fields:
        value = record.get(field)
        if value is not None and value != "":
            return value
    raise LineRefused("missing_timestamp", f"the event has no time ({', '.join(fields)})", fields[0])


def require_type(value: object) -> str:
    if value is None or value == "":
        raise LineRefused("missing_type", "the event has no type", "type")
    if not isinstance(value, str):
        raise LineRefused("invalid_type", "type must be a string", "type")
    return value


def from_segment(record: dict[str, Any]) -> dict[str, Any]:
    """`record` (a Segment event, maybe archived) as the edge takes it for an import; `record` is
    changed into it (a new dict of the kept keys cost ~2x)."""
    kind = require_type(record.get("type"))
    time = event_time(record)
    request_ip = record.get("requestIp")
    event = record
    for key in record.keys() - KEPT_FIELDS:
        del event[key]
    event["type"] = kind
    event["timestamp"] = time
    if isinstance(request_ip, str) and request_ip:
        context = event.get("context")
        if context is None:
            event["context"] = {"ip": request_ip}
        elif isinstance(context, dict) and "ip" not in context:
            event["context"] = {**context, "ip": request_ip}
    return event
