"""One line of an import file → the JSON of the event to send, or why it is refused.

An event without a messageId gets one derived from its content: `hwi-` and the first 40 hex digits
of the SHA-256 of the converted event's JSON with its keys sorted (orjson `OPT_SORT_KEYS`). The
same line always gets the same id, so re-sending it (a resumed or repeated import) makes a copy the
events table collapses (ReplacingMergeTree on message_id), never a second event. Two lines with
identical content are one event.
"""

from __future__ import annotations

import hashlib

import orjson

from .formats import Format, to_segment
from .refusal import LineRefused

# A line longer than this is refused unread (the edge takes events of 32 KB by default).
MAX_LINE_BYTES = 1 << 20
DERIVED_ID_PREFIX = "hwi-"


def derived_message_id(event: dict[str, object]) -> str:
    content = orjson.dumps({k: v for k, v in event.items() if k != "messageId"}, option=orjson.OPT_SORT_KEYS)
    return DERIVED_ID_PREFIX + hashlib.sha256(content).hexdigest()[:40]


def read_line(line: bytes, source: Format) -> bytes:
    """The event's JSON, as sent to the edge; LineRefused naming what is wrong with the line."""
    if len(line) > MAX_LINE_BYTES:
        raise LineRefused("line_too_long", f"the line is longer than {MAX_LINE_BYTES} bytes")
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise LineRefused("malformed_json", f"not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise LineRefused("not_an_object", "the line is not a JSON object")
    event = to_segment(record, source)
    message_id = event.get("messageId")
    if message_id is None or message_id == "":
        event["messageId"] = derived_message_id(event)
    try:
        return orjson.dumps(event)
    except TypeError as exc:  # (orjson refuses integers beyond 64 bits)
        raise LineRefused("malformed_json", f"the event cannot be encoded again: {exc}") from None
