"""Envelope → rows of `<project db>.events`: the raw columns of migration 1, then the derived
columns of migration 2 (consumers/enrich/). Enrichment runs here, in the consumers, so a replay
re-derives rows with today's rules and GeoIP data."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from headwater.core.projects.settings import ProjectSettings
from headwater.core.wire.envelope import NULL
from headwater.core.wire.timestamps import utc_timestamp
from headwater.privacy.anonymise import CACHED_JSON_BYTES, Change, CompiledRules, compile_rules

from .enrich import (
    ENRICHMENT_COLUMN_TYPES,
    ENRICHMENT_COLUMNS,
    ClientColumns,
    Enricher,
    skew_corrected,
)
from .enrich.enrich import IS_BOT
from .wire import EMPTY_CONTEXT, BadEvent, ReadEnvelope, WireContext, WireEvent, decode_any, decode_context

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
# The types migration 1 gives the raw columns (tests check them against a migrated table).
_TIME, _LOW = "DateTime64(3, 'UTC')", "LowCardinality(String)"
RAW_COLUMN_TYPES: dict[str, str] = {
    **dict.fromkeys(RAW_COLUMNS, "String"),
    "type": _LOW,
    "event": _LOW,
    "timestamp": _TIME,
    "sent_at": f"Nullable({_TIME})",
    "received_at": _TIME,
}
# `ip` is a raw column; its value is the enriched (anonymised) one.
DERIVED_COLUMNS: tuple[str, ...] = ENRICHMENT_COLUMNS[:-1]
COLUMNS: tuple[str, ...] = RAW_COLUMNS + DERIVED_COLUMNS
# What a row's values are written as: the consumers encode rows without asking ClickHouse.
COLUMN_TYPES: tuple[str, ...] = tuple({**ENRICHMENT_COLUMN_TYPES, **RAW_COLUMN_TYPES}[c] for c in COLUMNS)
DEFAULT_SETTINGS = ProjectSettings()

Row = tuple[Any, ...]
# What building one event's row may raise for what the event holds (UnicodeError and msgspec's
# DecodeError are ValueErrors).
_ROW_ERRORS = (ValueError, TypeError, OverflowError)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _falsy_json(raw: bytes) -> bool:
    """Whether the JSON value is one Python finds false (null, {}, [], "", 0, false): stored as {}."""
    return raw in (b"null", b"{}", b"[]", b'""', b"0", b"false") or (len(raw) <= 8 and not decode_any(raw))


def _json(raw: msgspec.Raw, redact: tuple[str, ...] = ()) -> str:
    """A properties/traits/context column: the JSON the edge wrote, as it wrote it (orjson), unless
    names must be redacted from it."""
    data = bytes(raw)
    if _falsy_json(data):
        return "{}"
    if redact:
        value = decode_any(raw)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in redact}
            return orjson.dumps(value).decode() if value else "{}"
    return data.decode()


def _context_json(raw: msgspec.Raw, context: WireContext, stored_ip: str) -> str:
    """The context column; a context that names an `ip` is stored with the anonymised address,
    never the full one behind the project's rule."""
    if context.ip is msgspec.UNSET:
        return _json(raw)
    value = decode_any(raw)
    return orjson.dumps({**value, "ip": stored_ip}).decode()


def _anonymised_event(event: WireEvent, rules: CompiledRules, changes: list[Change] | None) -> WireEvent:
    """`event` with the project's anonymisation rules applied to its ids, properties and traits."""
    updates: dict[str, object] = {}
    for field, results in rules.id_results:
        value = getattr(event, field)
        if value is None:
            continue
        # A repeated id (a visitor's, on each of its events) is one lookup here; the rest, and
        # every id when changes are noted, goes through apply_value.
        cached = changes is None and type(value) is str and len(value) <= CACHED_JSON_BYTES
        new = results.get(value, _UNKNOWN) if cached else _UNKNOWN
        if new is _UNKNOWN:
            new = rules.apply_value(field, value, changes)
        if new is not value:
            updates[field] = new
    for field, object_results in rules.object_results:
        raw = getattr(event, field)
        if raw is NULL:  # not sent (most events have traits or properties only)
            continue
        data = bytes(raw)
        if changes is None and len(data) <= CACHED_JSON_BYTES:  # (apply_json_raw, its lookup here)
            known = object_results.get(data, _UNKNOWN)
            raw = rules.apply_json_unknown(field, data) if known is _UNKNOWN else known
        else:
            raw = rules.apply_json_raw(field, raw, changes)
        if raw is not None:
            updates[field] = raw
    return msgspec.structs.replace(event, **updates) if updates else event


_UNKNOWN = object()


def _anonymised_context(
    raw: msgspec.Raw, rules: CompiledRules | None, changes: list[Change] | None
) -> msgspec.Raw:
    if rules is None or not rules.touches("context") or raw is NULL:
        return raw
    new = rules.apply_json_raw("context", raw, changes)
    return raw if new is None else new


def _flagged(columns: ClientColumns, is_bot: bool) -> ClientColumns:
    """The client's columns with `is_bot` as the bot filter decided (the parser's flag is one of
    its inputs)."""
    if columns[IS_BOT] is is_bot:
        return columns
    return (*columns[:IS_BOT], is_bot, *columns[IS_BOT + 1 :])


def envelope_rows(
    envelope: ReadEnvelope,
    enricher: Enricher,
    settings: ProjectSettings = DEFAULT_SETTINGS,
    bad: list[BadEvent] | None = None,
    hash_key: bytes | None = None,
    changes: list[Change] | None = None,
    dropped: dict[str, int] | None = None,
) -> list[Row]:
    """The rows of an envelope's events. With `bad`, an event that cannot become a row is listed
    there (by its place in `envelope.events`) and the others still are rows; without, it raises.

    The project's anonymisation rules (`hash_key`: its key for their `hash` action) apply to each
    event before its row is built, so every column, derived ones included, comes from the
    anonymised values; with `changes`, what they changed is noted there (the preview's answer).
    Under the project's `bots.mode` `drop`, bots' events are no rows: they are counted per reason
    in `dropped`."""
    rules = settings.anonymisation
    # Compiled once per rules and key (cached); None when the project has none: no work at all.
    anonymiser = compile_rules(rules.rules, hash_key) if rules.rules else None
    bots = settings.bots
    drop_bots = bots.mode == "drop"
    received_at = utc_timestamp(envelope.received_at)
    if received_at is None:
        raise ValueError(f"envelope {envelope.request_id} has an unreadable received_at")
    # Version 1 envelopes carry timestamps the edge corrected already; later ones as the client
    # sent them, with the batch's sentAt beside them.
    correct_skew = envelope.v != 1
    batch_sent = utc_timestamp(envelope.sent_at)
    secret = envelope.key_kind == "secret"
    request_ua, request_ip = envelope.user_agent, envelope.ip
    user_agent_text, origin_text = _text(envelope.user_agent), _text(envelope.origin)
    rows: list[Row] = []
    # The events of a request share its user agent and address unless they name their own: the
    # client's columns are derived once per distinct pair.
    clients: dict[tuple[str | None, str | None], tuple[ClientColumns, str]] = {}
    # Why a client is a bot (None: it is not), per (user agent, address) checked: the end user's.
    # A server-side sender's own user agent and address are not (a library, in a data centre);
    # those it relays in context.userAgent and context.ip are.
    verdicts: dict[tuple[str | None, str | None], str | None] = {}
    # Version 3: a batch's context, once for the events that have none (decoded once, too).
    batch_raw = _anonymised_context(envelope.context, anonymiser, changes)
    batch_context = decode_context(batch_raw) if batch_raw is not NULL else EMPTY_CONTEXT
    for index, event in enumerate(envelope.events):
        try:
            if anonymiser is not None:
                event = _anonymised_event(event, anonymiser, changes)
            raw_context = event.context
            if raw_context is NULL and batch_raw is not NULL:
                raw_context, context = batch_raw, batch_context
            else:
                raw_context = _anonymised_context(raw_context, anonymiser, changes)
                context = decode_context(raw_context)
            # The event's own context.userAgent (a server-side library relays the end user's), else
            # the request's; context.ip only from a server-side sender (the edge drops it from
            # browser events).
            user_agent = context.userAgent if isinstance(context.userAgent, str) else request_ua
            ip = context.ip if secret and isinstance(context.ip, str) else request_ip
            client = clients.get((user_agent, ip))
            if client is None:
                # Geolocate the full address first, then store it only as the project's rule leaves it.
                client = clients[user_agent, ip] = enricher.client(user_agent, ip, rules.ip)
            client_columns, stored_ip = client
            page = enricher.page(
                event.type if type(event.type) is str else "",
                bytes(context.page),
                bytes(context.campaign),
                bytes(event.properties),
            )
            checked_ua = user_agent if not secret or isinstance(context.userAgent, str) else None
            checked_ip = ip if not secret or isinstance(context.ip, str) else None
            if (checked_ua, checked_ip) in verdicts:
                reason = verdicts[checked_ua, checked_ip]
            else:
                parser_says_bot = checked_ua is not None and bool(client_columns[IS_BOT])
                reason = verdicts[checked_ua, checked_ip] = enricher.bots.client_reason(
                    checked_ua, parser_says_bot, checked_ip, bots
                )
            if reason is None:
                reason = enricher.bots.referrer_reason(page.referrer_host, bots)
            if reason is not None and drop_bots:
                if dropped is not None:
                    dropped[reason] = dropped.get(reason, 0) + 1
                continue
            happened = utc_timestamp(event.timestamp)
            sent = utc_timestamp(event.sentAt) if event.sentAt is not None else batch_sent
            if correct_skew:
                happened = skew_corrected(happened, sent, received_at)
            raw = (
                _text(event.messageId),
                _text(event.type),
                _text(event.event or event.name or ""),
                _text(event.anonymousId),
                _text(event.userId),
                _text(event.groupId),
                _text(event.previousId),
                happened or received_at,
                sent,
                received_at,
                envelope.request_id,
                stored_ip,
                user_agent_text,
                origin_text,
                _json(event.properties, rules.redact_properties),
                _json(event.traits, rules.redact_properties),
                _context_json(raw_context, context, stored_ip),
            )
            rows.append(raw + _flagged(client_columns, reason is not None) + page + (reason or "",))
        except _ROW_ERRORS as exc:  # one event's fault: the others are still rows
            if bad is None:
                raise
            bad.append(BadEvent(index, f"cannot become a row: {exc!r}"))
    return rows
