"""Envelope → rows of `<project db>.events`: the raw columns of migration 1, then the derived
columns of migration 2 (consumers/enrich/). Enrichment runs here, in the consumers, so a replay
re-derives rows with today's rules and GeoIP data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from headwater.control.project_settings import ProjectSettings
from headwater.edge.envelope import Envelope

from .enrich import ENRICHMENT_COLUMNS, Enricher

RAW_COLUMNS: tuple[str, ...] = (
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
# `ip` is a raw column; its value is the enriched (anonymised) one.
DERIVED_COLUMNS: tuple[str, ...] = ENRICHMENT_COLUMNS[:-1]
COLUMNS: tuple[str, ...] = RAW_COLUMNS + DERIVED_COLUMNS
DEFAULT_SETTINGS = ProjectSettings()

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


def _user_agent(envelope: Envelope, event: dict[str, Any]) -> str | None:
    """The event's own `context.userAgent` (a server-side library relays the end user's), else the
    request's."""
    context = event.get("context")
    if isinstance(context, dict) and isinstance(context.get("userAgent"), str):
        return str(context["userAgent"])
    return envelope.user_agent


def _redacted(value: object, names: tuple[str, ...]) -> object:
    if not names or not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if k not in names}


def envelope_rows(
    envelope: Envelope, enricher: Enricher, settings: ProjectSettings = DEFAULT_SETTINGS
) -> list[Row]:
    rules = settings.anonymisation
    received_at = parse_time(envelope.received_at)
    if received_at is None:
        raise ValueError(f"envelope {envelope.request_id} has an unreadable received_at")
    rows: list[Row] = []
    for event in envelope.events:
        # Geolocate the full address first, then store it only as the project's rule leaves it.
        enriched = enricher.enrich(event, _user_agent(envelope, event), _client_ip(envelope, event), rules.ip)
        context = event.get("context")
        if isinstance(context, dict) and "ip" in context:
            context = {**context, "ip": enriched.ip}  # never the full address behind the rule's back
        name = event.get("event") or event.get("name") or ""
        raw = (
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
            enriched.ip,
            _text(envelope.user_agent),
            _text(envelope.origin),
            _json(_redacted(event.get("properties"), rules.redact_properties)),
            _json(_redacted(event.get("traits"), rules.redact_properties)),
            _json(context),
        )
        rows.append(raw + enriched[:-1])
    return rows
