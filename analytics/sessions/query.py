"""The ClickHouse query computing session rows from a project's events (docs/sessions.md, "How a
session is computed"); reference.py is the same definition in plain Python, and the tests hold the
two equal.

One query, parameters only. It reads the events of a time window (and, optionally, of a list of
identities), so a role can recompute the sessions a batch of new events touched without re-reading
history; `is_new_visitor` alone looks further back, for the identities at hand only.

Shape, chosen by measurement (bench/sessions_query.py): one GROUP BY identity collecting each
identity's rows into an array of named tuples, then per identity, in arrays: de-duplication,
ordering, visit and piece boundaries, arraySplit into sessions and one ARRAY JOIN row per session
whose columns are array functions over its events. A GROUP BY message_id and window functions
computed the same rows several times slower (per-column argMin over a million keys dominates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from headwater.core.projects.settings import Sessions

from . import channels

# Copies of one message (a retried request) carry timestamps corrected for clock skew at each
# receipt, so they can differ a little; the query reads this far around the window to see every
# copy of a message whose chosen copy falls inside it (docs/sessions.md).
DEFAULT_COPY_SPREAD = timedelta(hours=1)

_IDENTITY = {
    "anonymous_id": "if(anonymous_id != '', anonymous_id, user_id)",
    "user_id": "if(user_id != '', user_id, anonymous_id)",
}

# The fields of an event the computation carries: (name, type, the events column expression).
_EVENT_FIELDS = (
    ("timestamp", "DateTime64(3, 'UTC')", "timestamp"),
    ("message_id", "String", "message_id"),
    ("received_at", "DateTime64(3, 'UTC')", "received_at"),
    ("request_id", "String", "request_id"),
    ("client_session_id", "String", "JSONExtractString(context, 'sessionId')"),
    ("type", "String", "type"),
    ("anonymous_id", "String", "anonymous_id"),
    ("user_id", "String", "user_id"),
    ("page_url", "String", "page_url"),
    ("page_host", "String", "page_host"),
    ("page_path", "String", "page_path"),
    ("referrer", "String", "referrer"),
    ("referrer_host", "String", "referrer_host"),
    ("utm_source", "String", "utm_source"),
    ("utm_medium", "String", "utm_medium"),
    ("utm_campaign", "String", "utm_campaign"),
    ("utm_term", "String", "utm_term"),
    ("utm_content", "String", "utm_content"),
    ("browser", "String", "browser"),
    ("os", "String", "os"),
    ("device_type", "String", "device_type"),
    ("country", "String", "country"),
    ("region", "String", "region"),
    ("city", "String", "city"),
    ("is_bot", "Bool", "is_bot"),
)

SESSION_COLUMNS = (
    "session_id", "identity", "anonymous_id", "user_id", "started_at", "ended_at", "duration_seconds",
    "events", "pageviews", "entry_url", "entry_path", "entry_referrer", "referrer_host", "utm_source",
    "utm_medium", "utm_campaign", "utm_term", "utm_content", "exit_path", "channel", "is_bounce",
    "is_new_visitor", "browser", "os", "device_type", "country", "region", "city", "is_bot",
)  # fmt: skip


@dataclass(frozen=True)
class SessionsQuery:
    sql: str
    parameters: dict[str, Any]


def sessions_query(
    database: str,
    rules: Sessions,
    window_from: datetime,
    window_to: datetime,
    identities: Sequence[str] | None = None,
    copy_spread: timedelta = DEFAULT_COPY_SPREAD,
) -> SessionsQuery:
    """The sessions of the events with timestamp in [window_from, window_to), of `identities` only
    when given, ordered by (identity, started_at); columns SESSION_COLUMNS. `database` is the
    project's own (hw_<id>), an identifier of ours."""
    identity = _IDENTITY[rules.identity]
    events = f"`{database}`.events"
    event_type = "Tuple(" + ", ".join(f"{name} {kind}" for name, kind, _ in _EVENT_FIELDS) + ")"
    event_values = ", ".join(expression for _, _, expression in _EVENT_FIELDS)
    only_identities = f"AND {identity} IN {{identities:Array(String)}}" if identities is not None else ""
    channel, channel_parameters = channels.channel_sql(
        "entry.referrer_host", "entry.page_host", "entry.utm_source", "entry.utm_medium", "entry.utm_campaign"
    )
    # Identities of the window seen before it: one pass over two columns of history, restricted to
    # this set, never a scan per session.
    window_identities = (
        "{identities:Array(String)}"
        if identities is not None
        else f"(SELECT DISTINCT {identity} FROM {events}"
        " WHERE timestamp >= {read_from:DateTime64(3)} AND timestamp < {window_to:DateTime64(3)})"
    )
    sql = f"""
SELECT
    lower(hex(MD5(concat(identity, char(0), first.message_id)))) AS session_id,
    identity,
    arrayFirst(e -> e.anonymous_id != '', session).anonymous_id AS anonymous_id,
    arrayLast(e -> e.user_id != '', session).user_id AS user_id,
    first.timestamp AS started_at,
    last.timestamp AS ended_at,
    (toUnixTimestamp64Milli(last.timestamp) - toUnixTimestamp64Milli(first.timestamp)) / 1000
        AS duration_seconds,
    length(session) AS events,
    arrayCount(e -> e.type = 'page', session) AS pageviews,
    entry.page_url AS entry_url,
    entry.page_path AS entry_path,
    entry.referrer AS entry_referrer,
    entry.referrer_host AS referrer_host,
    entry.utm_source AS utm_source,
    entry.utm_medium AS utm_medium,
    entry.utm_campaign AS utm_campaign,
    entry.utm_term AS utm_term,
    entry.utm_content AS utm_content,
    arrayLast(e -> e.page_path != '', session).page_path AS exit_path,
    {channel} AS channel,
    pageviews = 1 AND NOT arrayExists(e -> e.type IN ('track', 'screen'), session) AS is_bounce,
    session_number = 1 AND NOT seen_before AND identity NOT IN (
        SELECT DISTINCT {identity} FROM {events}
        WHERE timestamp < {{read_from:DateTime64(3)}} AND {identity} IN {window_identities}
    ) AS is_new_visitor,
    first.browser AS browser,
    first.os AS os,
    first.device_type AS device_type,
    first.country AS country,
    first.region AS region,
    first.city AS city,
    arrayExists(e -> e.is_bot, session) AS is_bot
FROM (
    SELECT identity, seen_before, session, session_number,
        session[1] AS first,
        session[-1] AS last,
        -- the first event with a page URL, else the first event
        session[greatest(arrayFirstIndex(e -> e.page_url != '', session), 1)] AS entry
    FROM (
        SELECT identity, seen_before,
            arraySplit((e, starts) -> starts, ordered, starts_session) AS sessions
        FROM (
            SELECT identity, seen_before, ordered,
                arrayMap(e -> toUnixTimestamp64Milli(e.timestamp), ordered) AS times,
                arrayMap(e -> e.client_session_id, ordered) AS client_sessions,
                arrayMap(
                    (i, gap, current, previous) -> i = 1
                        OR gap > {{timeout_ms:Int64}}
                        OR ({{honour_client_session_id:Bool}}
                            AND current != '' AND previous != '' AND current != previous),
                    arrayEnumerate(times),
                    arrayDifference(times),
                    client_sessions,
                    arrayPopBack(arrayPushFront(client_sessions, ''))
                ) AS starts_visit,
                arrayMap(
                    (time, visit_start) -> intDiv(time - visit_start, {{max_length_ms:Int64}}),
                    times,
                    arrayFill((time, starts) -> starts, times, starts_visit)
                ) AS pieces,
                arrayMap(
                    (starts, piece, previous_piece) -> starts OR piece != previous_piece,
                    starts_visit,
                    pieces,
                    arrayPopBack(arrayPushFront(pieces, -1))
                ) AS starts_session
            FROM (
                SELECT identity,
                    arrayExists(e -> e.timestamp < {{window_from:DateTime64(3)}}, chosen) AS seen_before,
                    arraySort(
                        e -> (e.timestamp, e.message_id),
                        arrayFilter(
                            e -> e.timestamp >= {{window_from:DateTime64(3)}}
                                AND e.timestamp < {{window_to:DateTime64(3)}},
                            chosen
                        )
                    ) AS ordered
                FROM (
                    SELECT identity,
                        -- of the copies of a message id, the one received first (then the
                        -- smallest request id): the first of its run once sorted so
                        arrayFilter(
                            (e, i) -> i = 1 OR e.message_id != by_message[i - 1].message_id,
                            arraySort(e -> (e.message_id, e.received_at, e.request_id), copies) AS by_message,
                            arrayEnumerate(by_message)
                        ) AS chosen
                    FROM (
                        SELECT {identity} AS identity,
                            groupArray(CAST(tuple({event_values}) AS {event_type})) AS copies
                        FROM {events}
                        WHERE timestamp >= {{read_from:DateTime64(3)}}
                            AND timestamp < {{read_to:DateTime64(3)}}
                            {only_identities}
                        GROUP BY identity
                        HAVING identity != ''
                    )
                )
            )
            WHERE notEmpty(ordered)
        )
    )
    ARRAY JOIN sessions AS session, arrayEnumerate(sessions) AS session_number
)
ORDER BY identity, started_at
"""
    parameters: dict[str, Any] = {
        "window_from": window_from,
        "window_to": window_to,
        "read_from": window_from - copy_spread,
        "read_to": window_to + copy_spread,
        "timeout_ms": rules.inactivity_timeout_seconds * 1000,
        "max_length_ms": rules.max_length_seconds * 1000,
        "honour_client_session_id": rules.honour_client_session_id,
        **channel_parameters,
    }
    if identities is not None:
        parameters["identities"] = list(identities)
    return SessionsQuery(sql, parameters)
