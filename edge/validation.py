"""Validation of Segment events, per type, as the Segment HTTP Tracking API defines them.

A valid event comes back normalised: ids as strings, `type` set, a `messageId` (assigned when the
client sent none), no `writeKey`. An invalid one raises IngestError naming the field at fault.
"""

from __future__ import annotations

from typing import Any

from headwater.core.wire.timestamps import MAX_TIMESTAMP_LENGTH, read_timestamp

from .errors import IngestError
from .ids import next_message_id

EVENT_TYPES = ("track", "page", "screen", "identify", "group", "alias")
# The kind of a path whose event names its own type in its body (Jitsu's /api/s/e).
OWN_TYPE = "event"
MAX_MESSAGE_ID_LENGTH = 100
MAX_NAME_LENGTH = 1000
_OBJECT_FIELDS = ("properties", "traits", "context", "integrations")
_TIME_FIELDS = ("timestamp", "sentAt", "originalTimestamp")


def value_nests_deeper(value: object, limit: int) -> bool:
    """True when `value` nests objects or arrays deeper than `limit`. Recursion is bounded by
    `limit` itself; scalars cost one type check each (this runs for every event of a batch)."""
    if type(value) is dict:
        children: Any = value.values()
    elif type(value) is list:
        children = value
    else:
        return False
    if limit <= 0:
        return True
    for child in children:
        kind = type(child)
        if (kind is dict or kind is list) and value_nests_deeper(child, limit - 1):
            return True
    return False


def check_timestamp(value: object, field: str) -> None:
    """IngestError `invalid_timestamp` unless `value` is absent (None) or a timestamp as the wire
    allows (core/wire/timestamps.py)."""
    if value is None or (type(value) is str and read_timestamp(value) is not None):
        return
    if not isinstance(value, str) or len(value) > MAX_TIMESTAMP_LENGTH:
        raise IngestError(400, "invalid_timestamp", f"{field} must be an ISO-8601 string", field)
    raise IngestError(400, "invalid_timestamp", f"{field} {value!r} is not ISO-8601", field)


def _id(event: dict[str, Any], field: str) -> str | None:
    value = event.get(field)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise IngestError(400, "invalid_field", f"{field} must be a string", field)
    text = str(value)
    if len(text) > MAX_NAME_LENGTH:
        raise IngestError(400, "invalid_field", f"{field} is longer than {MAX_NAME_LENGTH} characters", field)
    return text


def _name(event: dict[str, Any], field: str, required: bool) -> None:
    value = event.get(field)
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip():
        if required:
            raise IngestError(400, "missing_field", f"a {event['type']} event needs {field}", field)
        raise IngestError(400, "invalid_field", f"{field} must be a string", field)
    if len(value) > MAX_NAME_LENGTH:
        raise IngestError(400, "invalid_field", f"{field} is longer than {MAX_NAME_LENGTH} characters", field)


def validate_event(
    event: object,
    event_type: str | None,
    max_event_bytes: int,
    size: int,
    max_depth: int,
) -> dict[str, Any]:
    """A valid event of `event_type` (None: the event's own `type`, as in a batch), normalised."""
    if not isinstance(event, dict):
        raise IngestError(400, "invalid_event", "an event must be a JSON object")
    if size > max_event_bytes:
        raise IngestError(413, "event_too_large", f"an event may be at most {max_event_bytes} bytes")
    kind = event_type or event.get("type")
    if kind not in EVENT_TYPES:
        raise IngestError(400, "invalid_type", f"type must be one of {', '.join(EVENT_TYPES)}", "type")
    if value_nests_deeper(event, max_depth):
        raise IngestError(400, "too_deep", f"the event nests deeper than {max_depth} levels")
    normalised = event  # normalised in place: the parsed body is the edge's own
    normalised.pop("writeKey", None)
    normalised["type"] = kind
    user_id, anonymous_id = _id(event, "userId"), _id(event, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise IngestError(400, "missing_field", "every event needs userId or anonymousId", "userId")
    for field, value in (("userId", user_id), ("anonymousId", anonymous_id)):
        if value is not None:
            normalised[field] = value
        else:
            normalised.pop(field, None)
    for field in _OBJECT_FIELDS:
        if field in event and event[field] is not None and not isinstance(event[field], dict):
            raise IngestError(400, "invalid_field", f"{field} must be an object", field)
    for field in _TIME_FIELDS:
        check_timestamp(event.get(field), field)
    if kind == "track":
        _name(normalised, "event", required=True)
    elif kind in ("page", "screen"):
        _name(normalised, "name", required=False)
        _name(normalised, "category", required=False)
    elif kind == "group":
        group_id = _id(event, "groupId")
        if group_id is None:
            raise IngestError(400, "missing_field", "a group event needs groupId", "groupId")
        normalised["groupId"] = group_id
    elif kind == "alias":
        previous_id = _id(event, "previousId")
        if previous_id is None:
            raise IngestError(400, "missing_field", "an alias event needs previousId", "previousId")
        normalised["previousId"] = previous_id
    message_id = event.get("messageId")
    if message_id is None:
        normalised["messageId"] = next_message_id()
    elif not isinstance(message_id, str) or not message_id or len(message_id) > MAX_MESSAGE_ID_LENGTH:
        raise IngestError(
            400,
            "invalid_field",
            f"messageId must be a string of 1 to {MAX_MESSAGE_ID_LENGTH} characters",
            "messageId",
        )
    return normalised
