"""Envelope → rows of `<project db>.events` (the columns of control/migrations/m0001_events.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from headwater.edge.envelope import Envelope

COLUMNS: tuple[str, ...] = (
    "message_id",
    "type",
    "event",
    "anonymous_id",
    "user_id",
    "group_id",
    "previous_id",
    "timestamp",
    "sent_at",
    "received_at",
    "request_id",
    "ip",
    "user_agent",
    "origin",
    "properties",
    "traits",
    "context",
)

Row = tuple[Any, ...]


def parse_time(value: object) -> datetime | None:
    """An ISO-8601 string as an aware UTC datetime; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _json(value: object) -> str:
    return orjson.dumps(value).decode() if value else "{}"


def _client_ip(envelope: Envelope, event: dict[str, Any]) -> str | None:
    """A server-side sender (secret key) may say where the event came from in `context.ip`; the
    edge already dropped it from browser (public-key) events."""
    context = event.get("context")
    if envelope.key_kind == "secret" and isinstance(context, dict) and isinstance(context.get("ip"), str):
        return str(context["ip"])
    return envelope.ip


def envelope_rows(envelope: Envelope) -> list[Row]:
    received_at = parse_time(envelope.received_at)
    if received_at is None:
        raise ValueError(f"envelope {envelope.request_id} has an unreadable received_at")
    rows: list[Row] = []
    for event in envelope.events:
        name = event.get("event") or event.get("name") or ""
        rows.append(
            (
                _text(event.get("messageId")),
                _text(event.get("type")),
                _text(name),
                _text(event.get("anonymousId")),
                _text(event.get("userId")),
                _text(event.get("groupId")),
                _text(event.get("previousId")),
                parse_time(event.get("timestamp")) or received_at,
                parse_time(event.get("sentAt")),
                received_at,
                envelope.request_id,
                _text(_client_ip(envelope, event)),
                _text(envelope.user_agent),
                _text(envelope.origin),
                _json(event.get("properties")),
                _json(event.get("traits")),
                _json(event.get("context")),
            )
        )
    return rows
