"""The reference sessionizer: the definition of docs/sessions.md ("How a session is computed") in
plain Python, written to be obviously correct rather than fast. It is the oracle the ClickHouse
query (query.py) is tested against; nothing in production calls it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from headwater.core.migrations.copy_rank import copy_rank
from headwater.core.projects.settings import Sessions

from . import channels


@dataclass(frozen=True)
class StoredEvent:
    """One stored row of `events`, with the columns sessions need (a retried message has several)."""

    message_id: str
    type: str
    anonymous_id: str
    user_id: str
    timestamp: datetime
    received_at: datetime
    request_id: str
    client_session_id: str
    page_url: str = ""
    page_host: str = ""
    page_path: str = ""
    referrer: str = ""
    referrer_host: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    utm_term: str = ""
    utm_content: str = ""
    browser: str = ""
    os: str = ""
    device_type: str = ""
    country: str = ""
    region: str = ""
    city: str = ""
    is_bot: bool = False


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    identity: str
    anonymous_id: str
    user_id: str
    started_at: datetime
    ended_at: datetime
    visit_started_at: datetime
    duration_seconds: float
    events: int
    pageviews: int
    entry_url: str
    entry_path: str
    entry_referrer: str
    referrer_host: str
    utm_source: str
    utm_medium: str
    utm_campaign: str
    utm_term: str
    utm_content: str
    exit_path: str
    channel: str
    is_bounce: bool
    is_new_visitor: bool
    browser: str
    os: str
    device_type: str
    country: str
    region: str
    city: str
    is_bot: bool


def client_session_id(context: str) -> str:
    """`context.sessionId` when it is a JSON string, else '' (the first of repeated keys, as
    ClickHouse reads it)."""
    try:
        parsed = json.loads(context, object_pairs_hook=_first_of_repeated_keys)
    except ValueError:
        return ""
    value = parsed.get("sessionId") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else ""


def _first_of_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in pairs:
        kept.setdefault(key, value)
    return kept


def session_id(identity: str, first_message_id: str) -> str:
    # An id, not a secret: MD5 as ClickHouse computes it (query.py).
    return hashlib.md5(f"{identity}\0{first_message_id}".encode(), usedforsecurity=False).hexdigest()


def identity_of(event: StoredEvent, rules: Sessions) -> str:
    first, second = (
        (event.anonymous_id, event.user_id)
        if rules.identity == "anonymous_id"
        else (event.user_id, event.anonymous_id)
    )
    return first or second


def deduplicated(stored: Iterable[StoredEvent]) -> list[StoredEvent]:
    """One copy per message id: the one of highest rank (received first; among copies received in
    the same millisecond, the smallest hash of its request id: core/migrations/copy_rank.py)."""
    winners: dict[str, StoredEvent] = {}
    for event in stored:
        kept = winners.get(event.message_id)
        if kept is None or copy_rank(event.received_at, event.request_id) > copy_rank(
            kept.received_at, kept.request_id
        ):
            winners[event.message_id] = event
    return list(winners.values())


def sessionize(
    stored: Iterable[StoredEvent],
    rules: Sessions,
    window_from: datetime | None = None,
    window_to: datetime | None = None,
    identities: Sequence[str] | None = None,
) -> list[SessionRow]:
    """The sessions of the de-duplicated events with timestamp in [window_from, window_to) (either
    end open when None), of `identities` only when given; ordered by (identity, started_at, first
    message id)."""
    events = deduplicated(stored)
    # Each identity's first event, in the order (timestamp, message_id): its first session is the
    # one that begins with it (two sessions can start at one timestamp on a client session change).
    first_seen: dict[str, tuple[datetime, str]] = {}
    for event in events:
        identity = identity_of(event, rules)
        position = (event.timestamp, event.message_id)
        if identity and (identity not in first_seen or position < first_seen[identity]):
            first_seen[identity] = position

    def in_window(event: StoredEvent) -> bool:
        return (window_from is None or event.timestamp >= window_from) and (
            window_to is None or event.timestamp < window_to
        )

    chosen = [e for e in events if identity_of(e, rules) and in_window(e)]
    if identities is not None:
        chosen = [e for e in chosen if identity_of(e, rules) in identities]
    chosen.sort(key=lambda e: (identity_of(e, rules), e.timestamp, e.message_id))
    rows: list[SessionRow] = []
    for identity, of_identity in groupby(chosen, key=lambda e: identity_of(e, rules)):
        for visit_start, session in _split(list(of_identity), rules):
            rows.append(_aggregate(identity, session, visit_start, first_seen[identity]))
    return rows


def _split(ordered: list[StoredEvent], rules: Sessions) -> list[tuple[datetime, list[StoredEvent]]]:
    """Visits by inactivity and client session id, each cut into pieces of max_length; each with
    the start of its visit."""
    timeout = timedelta(seconds=rules.inactivity_timeout_seconds)
    max_length = timedelta(seconds=rules.max_length_seconds)
    sessions: list[tuple[datetime, list[StoredEvent]]] = []
    previous: StoredEvent | None = None
    visit_start = ordered[0].timestamp
    piece = 0
    for event in ordered:
        starts_visit = (
            previous is None
            or event.timestamp - previous.timestamp > timeout
            or (
                rules.honour_client_session_id
                and event.client_session_id != ""
                and previous.client_session_id != ""
                and event.client_session_id != previous.client_session_id
            )
        )
        if starts_visit:
            visit_start = event.timestamp
        event_piece = (event.timestamp - visit_start) // max_length
        if starts_visit or event_piece != piece:
            sessions.append((visit_start, []))
        piece = event_piece
        sessions[-1][1].append(event)
        previous = event
    return sessions


def _aggregate(
    identity: str,
    session: list[StoredEvent],
    visit_start: datetime,
    identity_first_seen: tuple[datetime, str],
) -> SessionRow:
    first, last = session[0], session[-1]
    entry = next((e for e in session if e.page_url != ""), first)
    pageviews = sum(1 for e in session if e.type == "page")
    duration_ms = (last.timestamp - first.timestamp) // timedelta(milliseconds=1)
    return SessionRow(
        session_id=session_id(identity, first.message_id),
        identity=identity,
        anonymous_id=next((e.anonymous_id for e in session if e.anonymous_id != ""), ""),
        user_id=next((e.user_id for e in reversed(session) if e.user_id != ""), ""),
        started_at=first.timestamp,
        ended_at=last.timestamp,
        visit_started_at=visit_start,
        duration_seconds=duration_ms / 1000,
        events=len(session),
        pageviews=pageviews,
        entry_url=entry.page_url,
        entry_path=entry.page_path,
        entry_referrer=entry.referrer,
        referrer_host=entry.referrer_host,
        utm_source=entry.utm_source,
        utm_medium=entry.utm_medium,
        utm_campaign=entry.utm_campaign,
        utm_term=entry.utm_term,
        utm_content=entry.utm_content,
        exit_path=next((e.page_path for e in reversed(session) if e.page_path != ""), ""),
        channel=channels.channel_of(
            entry.referrer_host, entry.page_host, entry.utm_source, entry.utm_medium, entry.utm_campaign
        ),
        is_bounce=pageviews == 1 and not any(e.type in ("track", "screen") for e in session),
        is_new_visitor=identity_first_seen == (first.timestamp, first.message_id),
        browser=first.browser,
        os=first.os,
        device_type=first.device_type,
        country=first.country,
        region=first.region,
        city=first.city,
        is_bot=any(e.is_bot for e in session),
    )
