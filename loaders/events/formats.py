"""Which export a line comes from, and the Segment event it holds.

`--format segment`: every line is a Segment event (as libraries send them, or from Segment's
archives). `--format jitsu`: every line comes from Jitsu, in any of its three shapes (jitsu.py).
`--format auto` (the default) decides per line: Jitsu Classic's keys (`event_type`,
`eventn_ctx_event_id`) make it a legacy event, a snake_case `message_id` without a `messageId` a
bulker row, anything else a Segment event (Jitsu's own event JSON is one).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from .jitsu import from_flat, from_legacy, is_flat, is_legacy
from .segment import from_segment

Format = Literal["auto", "segment", "jitsu"]
FORMATS: tuple[str, ...] = get_args(Format)


def to_segment(record: dict[str, Any], source: Format) -> dict[str, Any]:
    """The Segment event `record` (one line's JSON object) holds; LineRefused when it cannot be one."""
    if source != "segment":
        if is_legacy(record):
            return from_legacy(record)
        if is_flat(record):
            return from_flat(record)
    return from_segment(record)
