"""The ClickHouse query computing session rows from a project's events (docs/sessions.md, "How a
session is computed"); reference.py is the same definition in plain Python, and the tests hold the
two equal.

One query, parameters only. It reads the events of a time window (and, optionally, of a list of
identities), so a role can recompute the sessions a batch of new events touched without re-reading
history; `is_new_visitor` alone looks further back, for the identities at hand only.

Shape, chosen by measurement (bench/sessions_query.py; 1M events, 20k visitors, 2 cores shared):
one GROUP BY identity collecting each identity's rows into an array of named tuples, then per
identity, in arrays: de-duplication, order, visit and piece boundaries, arraySplit into sessions and
one ARRAY JOIN row per session whose columns are array functions over its events. ~0.8-1.0M
events/s, of which the scan and the grouping into arrays take over half. A GROUP BY message_id
(per-column argMin) followed by window functions computed the same rows at ~0.1M events/s; one
groupArray per column zipped afterwards was ~1.4x slower than one groupArray of tuples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from headwater.core.long_lists import LONG_LIST_SETTINGS, long_list, long_list_parameter
from headwater.core.migrations import m0003_sessions, m0004_sessionizer_recent, m0006_client_session_id
from headwater.core.projects.settings import Sessions

from . import channels

# Copies of one message (a retried request) carry timestamps corrected for clock skew at each
# receipt, so they can differ a little; the query reads this far around the window to see every
# copy of a message whose chosen copy falls inside it (docs/sessions.md).
DEFAULT_COPY_SPREAD = timedelta(hours=1)
# No end: what a cycle recomputes runs to the latest event.
FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)
# No start: the earliest time a DateTime64 column holds. A window from here has no history before
# it, so `is_new_visitor` needs no look back.
THE_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAR_FUTURE_MS = (FAR_FUTURE - _EPOCH) // timedelta(milliseconds=1)

_IDENTITY = {
    "anonymous_id": "if(anonymous_id != '', anonymous_id, user_id)",
    "user_id": "if(user_id != '', user_id, anonymous_id)",
}

# An event's client session id, as migration 6's column of that name holds it.
CLIENT_SESSION_ID = m0006_client_session_id.EXPRESSION

# The fields of an event the computation reads, as migration 4 names and types them (its
# `sessionizer_recent` table holds them as columns): each the events column of its name
# (`client_session_id` computed from `context` since migration 6). LowCardinality as stored:
# converting them to String measured ~15% of the query.
_STORED_FIELDS = m0004_sessionizer_recent.SESSION_EVENT_COLUMNS
# What it carries of them: which copy of a message counts travels as the copy's rank (migration
# 7's column, in both tables), not as the received time and request id it is computed from.
_COPY_RANK = ("copy_rank", "UInt128")
_EVENT_FIELDS = tuple(
    _COPY_RANK if name == "received_at" else (name, kind)
    for name, kind in _STORED_FIELDS
    if name != "request_id"
)
# Fields read only from a session's entry or first event: carried per event as one String
# (`packed`), not as tuple elements. Grouping each identity's events into arrays of tuples is most of
# the query's cost, and it grows with the tuple's width: a 5M-event shard took 5.2-6.4 s with every
# field, 3.6-3.9 s with these packed (same sessions).
_PACKED = (
    "page_host", "referrer", "referrer_host", "utm_source", "utm_medium", "utm_campaign",
    "utm_term", "utm_content", "browser", "os", "device_type", "country", "region", "city",
)  # fmt: skip
# The packed values are joined by _SEPARATOR, each with its zero bytes escaped as _ESCAPED_ZERO: in an
# escaped value every zero byte is followed by 1, so the only zero bytes followed by 2 are the
# separators, and any bytes round-trip. Measured on a 5M-event shard against 4-byte length prefixes
# (the 14 conversions): packing ~0.3 s less; escaping costs ~0.03 s.
_SEPARATOR = "char(0, 2)"
_ZERO, _ESCAPED_ZERO = "char(0)", "char(0, 1)"


def _packed(values: Sequence[str]) -> str:
    """SQL packing the string `values` (expressions) into one String."""
    escaped = (f"replaceAll({value}, {_ZERO}, {_ESCAPED_ZERO})" for value in values)
    return f"concat({f', {_SEPARATOR}, '.join(escaped)})"


def _unpacked(event: str) -> str:
    """SQL select items decoding `event`.packed into columns `packed_<event>_<field>`."""
    values = (
        f"arrayMap(value -> replaceAll(value, {_ESCAPED_ZERO}, {_ZERO}),"
        f" splitByString({_SEPARATOR}, {event}.packed)) AS {event}_values"
    )
    fields = (f"{event}_values[{index + 1}] AS packed_{event}_{name}" for index, name in enumerate(_PACKED))
    return ",\n        ".join([values, *fields])


# Where the events are read from: the project's events, or the sessionizer's copy of recent ones.
EventSource = Literal["events", "sessionizer_recent"]
EVENTS: EventSource = "events"
RECENT: EventSource = "sessionizer_recent"

# The sessions table's columns, in its order (migration 3).
SESSION_COLUMNS = tuple(name for name, _ in m0003_sessions.SESSION_COLUMNS)


@dataclass(frozen=True)
class SessionsQuery:
    sql: str
    parameters: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)  # to run it with


# The per-identity (cycle) form's GROUP BY holds a bounded number of identities (a cycle's, or a
# rebuild chunk's): aggregated in one level it hands the array stages a few large blocks rather
# than 256 small ones, each paying the stages' per-block set-up. Measured on a cycle's first run
# (a new statement: the engine's query condition cache speeds up repeated ones) for 10k
# identities and ~100k events: 1.75-1.87 → 1.26-1.40 s; 23k identities 2.07 → 1.55 s; a chunk
# of 50k the same either way. Not for a full rebuild's shards (300k identities), which one level
# made 2x slower (its merge of the threads' tables is single-threaded).
ONE_LEVEL_AGGREGATION = {"group_by_two_level_threshold": 0, "group_by_two_level_threshold_bytes": 0}


def string_set(parameter: str) -> str:
    """SQL for the strings of a long list parameter (core/long_lists.py) as a set for `IN`.
    Through a subquery: a literal array of more than ~50,000 elements on the right of IN (or in
    has()) took ~40 s in the embedded engine where 50,000 took 0.3 s; the subquery's set takes
    0.4 s at 60,000 and 1.2 s at 200,000."""
    return f"(SELECT arrayJoin({long_list(parameter, 'String')}))"


# The identities at hand (the `identities` parameter).
IDENTITY_SET = string_set("identities")


def time_lookup(name: str, key: str) -> str:
    """SQL for the time of `key` in a parameter map identity → time, passed as two long lists
    (time_map_parameters): the drivers do not all bind a Map. `transform` over constant arrays
    looks up in a hash table built once; a Map's subscript searches its keys linearly for every
    row (a rebuild of 200k events and 6,000 identities took 4.7 s that way). The times travel as
    Unix milliseconds: a constant array of 10k DateTime64 values took the engine ~0.1 s more to
    take in than the same of Int64, for every statement using one."""
    return f"fromUnixTimestamp64Milli({time_lookup_milliseconds(name, key)}, 'UTC')"


def time_lookup_milliseconds(name: str, key: str) -> str:
    """time_lookup's time as Unix milliseconds (Int64)."""
    return (
        f"transform({key}, {long_list(f'{name}_keys', 'String')},"
        f" {long_list(f'{name}_values', 'Int64')}, toInt64({_FAR_FUTURE_MS}))"
    )


def time_map_parameters(name: str, times: Mapping[str, datetime]) -> dict[str, Any]:
    return {
        **long_list_parameter(f"{name}_keys", list(times)),
        **long_list_parameter(f"{name}_values", [unix_milliseconds(time) for time in times.values()]),
    }


def unix_milliseconds(moment: datetime) -> int:
    """Unix milliseconds of an aware time (whole: the column's precision)."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def from_unix_milliseconds(milliseconds: int) -> datetime:
    """The aware time of Unix milliseconds."""
    return _EPOCH + timedelta(milliseconds=milliseconds)


def copy_to_recent(database: str, condition: str) -> str:
    """SQL copying the events matching `condition` (parameters only) into the sessionizer's
    `sessionizer_recent`, each field as the computation reads it."""
    names = ", ".join(name for name, _ in _STORED_FIELDS)
    return f"""
        INSERT INTO `{database}`.{RECENT} ({names}, inserted_at)
        SELECT {names}, inserted_at FROM `{database}`.{EVENTS} WHERE {condition}
    """


def _id_columns(followed: str) -> str:
    """SQL for a session's anonymous_id (its first) and user_id (its last known): the followed one
    is the identity wherever an event has it."""
    columns = {
        "anonymous_id": "arrayFirst(e -> e.anonymous_id != '', session).anonymous_id",
        "user_id": "arrayLast(e -> e.user_id != '', session).user_id",
        followed: "if(arrayExists(e -> e.has_followed_id, session), identity, '')",
    }
    return ",\n    ".join(f"{value} AS {name}" for name, value in columns.items())


def identity_expression(rules: Sessions) -> str:
    """The identity a session follows, as an expression over the events table's columns."""
    return _IDENTITY[rules.identity]


def sessions_query(
    database: str,
    rules: Sessions,
    window_from: datetime | None = None,
    window_to: datetime | None = None,
    identities: Sequence[str] | None = None,
    copy_spread: timedelta = DEFAULT_COPY_SPREAD,
    starts: Mapping[str, datetime] | None = None,
    inserted_through: datetime | None = None,
    ordered: bool = True,
    shard: tuple[int, int] | None = None,
    seen_before_start: Sequence[str] | None = None,
    source: EventSource = EVENTS,
) -> SessionsQuery:
    """The sessions of the events with timestamp in [window_from, window_to) (window_from None:
    from the beginning of time), of `identities` only when given, of one `shard` (index, count)
    of the identities by hash only when given, ordered by (identity, started_at, first message id)
    unless not `ordered` (an INSERT needs no order: the table sorts by its own key); columns
    SESSION_COLUMNS. `database` is the project's own (hw_<id>), an identifier of ours.

    A sessionizer cycle instead gives `starts`: per identity (those only) where to begin, each a
    visit start, with no end; and `inserted_through`: only events inserted up to then count, so
    that the rows are a function of that snapshot alone. With `starts`, `seen_before_start` names
    the identities known to have events before their start (the sessionizer knows from its own
    table): `is_new_visitor` then reads no events before the starts. `source`: where the events
    are read from, `events` or (a cycle's, for starts within it) the sessionizer's recent copy; the
    look back of `is_new_visitor` without `seen_before_start` reads `events`."""
    if starts is None and window_to is None:
        raise ValueError("a window, or per-identity starts")
    if source == RECENT and starts is None:
        raise ValueError("the recent copy serves per-identity starts only")
    from_the_beginning = starts is None and window_from is None
    identity = _IDENTITY[rules.identity]
    events = f"`{database}`.{EVENTS}"
    value_of = {name: name for name, _ in _EVENT_FIELDS}
    # The id a session follows travels as whether the event has one: when it does, it is the
    # identity (a string less per event in the grouping: ~4% of a rebuild).
    value_of["has_followed_id"] = f"{value_of[rules.identity]} != ''"
    # The type travels as what the sessions need of it: a page view (1), a track or screen (2).
    value_of["kind"] = "multiIf(type = 'page', 1, type IN ('track', 'screen'), 2, 0)"
    narrowed = {rules.identity: ("has_followed_id", "Bool"), "type": ("kind", "UInt8")}
    carried = [narrowed.get(name, (name, kind)) for name, kind in _EVENT_FIELDS if name not in _PACKED]
    carried.append(("packed", "String"))
    event_type = "Tuple(" + ", ".join(f"{name} {kind}" for name, kind in carried) + ")"
    value_of["packed"] = _packed([value_of[name] for name in _PACKED])
    event_values = ", ".join(value_of[name] for name, _ in carried)
    only_identities = f"AND {identity} IN {IDENTITY_SET}" if identities is not None else ""
    if shard is not None:
        only_identities += f" AND cityHash64({identity}) % {{shards:UInt64}} = {{shard:UInt64}}"
    # Where the events taken begin and end, and where their copies are read from.
    if starts is not None:
        # Per identity, from its start (minus the copy spread for the copies): the rows are read
        # from the earliest of those bounds, of the identities at hand (a set), and each identity's
        # own bound is applied to its array. Looking the bound up for every row in WHERE cost
        # ~0.25 s of a ~0.75 s cycle query (10k identities, 100k events), and once per identity
        # after the GROUP BY ~0.3 s (the lookup's hash table is built per block, and the
        # aggregation hands on small ones); once per row inside the aggregation, ~0.02 s.
        group_lower = f"any({time_lookup('starts', identity)})"
        # The copies before an identity's own bound are left out of the de-duplication by a flag
        # leading its keys (filtering the wide array of copies for it cost ~0.17 s more).
        readable = "e.timestamp >= lower_bound - toIntervalMillisecond({copy_spread_ms:Int64}), "
        id_of_key, chosen_if = "(key.1, key.2)", "id.1 AND "
        upper = "{far_future:DateTime64(3, 'UTC')}"
        read_window = f"timestamp >= {{read_floor:DateTime64(3, 'UTC')}} AND timestamp < {upper}"
        only_identities = f"AND {identity} IN {string_set('starts_keys')}"
    else:
        group_lower = "{window_from:DateTime64(3)}"
        readable, id_of_key, chosen_if = "", "key.1", ""
        upper = "{window_to:DateTime64(3)}"
        read_window = "timestamp >= {read_from:DateTime64(3)} AND timestamp < {read_to:DateTime64(3)}"
    snapshot = "AND inserted_at <= {inserted_through:DateTime64(3, 'UTC')}" if inserted_through else ""
    channel, channel_parameters = channels.channel_sql(
        "packed_entry_referrer_host",
        "packed_entry_page_host",
        "packed_entry_utm_source",
        "packed_entry_utm_medium",
        "packed_entry_utm_campaign",
    )
    # Identities of the window seen before it: one pass over two columns of history, restricted to
    # this set, never a scan per session.
    window_identities = (
        string_set("starts_keys")
        if starts is not None
        else IDENTITY_SET
        if identities is not None
        else f"(SELECT DISTINCT {identity} FROM {events}"
        " WHERE timestamp >= {read_from:DateTime64(3)} AND timestamp < {window_to:DateTime64(3)}"
        f" {only_identities})"
    )
    # New: the identity's first session, with nothing of it before the window (none before the
    # beginning of time: then no look back at all, which a full rebuild would pay with a scan).
    is_new_visitor = "session_number = 1 AND NOT seen_before"
    if seen_before_start is not None:
        is_new_visitor += f" AND identity NOT IN {string_set('seen_before_start')}"
    elif not from_the_beginning:
        read_lower = (
            f"({time_lookup('starts', identity)} - toIntervalMillisecond({{copy_spread_ms:Int64}}))"
            if starts is not None
            else "{read_from:DateTime64(3)}"
        )
        is_new_visitor += f""" AND identity NOT IN (
        SELECT DISTINCT {identity} FROM {events}
        WHERE timestamp < {read_lower} AND {identity} IN {window_identities}
            {snapshot}
    )"""
    sql = f"""
WITH
-- Each identity's stored rows of the window (and the copy spread around it), as named tuples.
stored AS (
    SELECT {identity} AS identity,
        -- where the identity's events begin, kept as a column: looked up inside the lambdas
        -- below it would be re-done, its constant arrays copied, for every element
        {group_lower} AS lower_bound,
        groupArray(CAST(tuple({event_values}) AS {event_type})) AS copies
    FROM `{database}`.{source}
    WHERE {read_window} {only_identities} {snapshot}
    GROUP BY identity
    HAVING identity != ''
),
-- Of the copies of a message id, the one of highest rank (received first; migration 7): the first
-- of its run once sorted by message id and inverted rank. Decided on narrow arrays, then applied
-- with one filter (sorting the wide tuples for it cost half the query). Neighbours are compared
-- through a shifted array: a lambda indexing a captured array would copy that array once per
-- element.
copies_by_message AS (
    SELECT identity, copies, lower_bound,
        arrayMap(e -> ({readable}e.message_id, bitNot(e.copy_rank)), copies) AS keys,
        arraySort((position, key) -> key, arrayEnumerate(copies), keys) AS positions_by_message,
        arrayMap(key -> {id_of_key}, arraySort(keys)) AS ids_by_message
    FROM stored
),
chosen AS (
    SELECT identity, lower_bound,
        arrayFilter(
            (e, is_chosen) -> is_chosen,
            copies,
            -- the flags put back in the copies' own order
            arraySort(
                (is_chosen, position) -> position,
                arrayMap(
                    (id, previous, i) -> {chosen_if}(i = 1 OR id != previous),
                    ids_by_message,
                    arrayPopBack(arrayPushFront(ids_by_message, ids_by_message[1])),
                    arrayEnumerate(ids_by_message)
                ),
                positions_by_message
            )
        ) AS deduplicated
    FROM copies_by_message
),
-- The window's events of each identity in order; events before it only tell it is not new.
ordered AS (
    SELECT identity,
        arrayExists(e -> e.timestamp < lower_bound, deduplicated) AS seen_before,
        arraySort(
            e -> (e.timestamp, e.message_id),
            arrayFilter(
                e -> e.timestamp >= lower_bound AND e.timestamp < {upper},
                deduplicated
            )
        ) AS events
    FROM chosen
),
boundaries AS (
    SELECT identity, seen_before, events,
        arrayMap(e -> toUnixTimestamp64Milli(e.timestamp), events) AS times,
        arrayMap(e -> e.client_session_id, events) AS client_sessions,
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
        arrayFill((time, starts) -> starts, times, starts_visit) AS visit_times,
        arrayMap(
            (time, visit_start) -> intDiv(time - visit_start, {{max_length_ms:Int64}}),
            times,
            visit_times
        ) AS pieces,
        arrayMap(
            (starts, piece, previous_piece) -> starts OR piece != previous_piece,
            starts_visit,
            pieces,
            arrayPopBack(arrayPushFront(pieces, -1))
        ) AS starts_session
    FROM ordered
    WHERE notEmpty(events)
),
sessions AS (
    SELECT identity, seen_before, session, session_number, visit_start_ms,
        session[1] AS first,
        session[-1] AS last,
        -- the first event with a page URL, else the first event
        session[greatest(arrayFirstIndex(e -> e.page_url != '', session), 1)] AS entry,
        {_unpacked("entry")},
        {_unpacked("first")}
    FROM boundaries
    ARRAY JOIN
        arraySplit((e, starts) -> starts, events, starts_session) AS session,
        arrayMap(piece -> piece[1], arraySplit((time, starts) -> starts, visit_times, starts_session))
            AS visit_start_ms,
        arrayEnumerate(arraySplit((e, starts) -> starts, events, starts_session)) AS session_number
)
SELECT
    lower(hex(MD5(concat(identity, char(0), first.message_id)))) AS session_id,
    identity,
    {_id_columns(rules.identity)},
    first.timestamp AS started_at,
    last.timestamp AS ended_at,
    fromUnixTimestamp64Milli(visit_start_ms, 'UTC') AS visit_started_at,
    (toUnixTimestamp64Milli(last.timestamp) - toUnixTimestamp64Milli(first.timestamp)) / 1000
        AS duration_seconds,
    length(session) AS events,
    arrayCount(e -> e.kind = 1, session) AS pageviews,
    entry.page_url AS entry_url,
    entry.page_path AS entry_path,
    packed_entry_referrer AS entry_referrer,
    packed_entry_referrer_host AS referrer_host,
    packed_entry_utm_source AS utm_source,
    packed_entry_utm_medium AS utm_medium,
    packed_entry_utm_campaign AS utm_campaign,
    packed_entry_utm_term AS utm_term,
    packed_entry_utm_content AS utm_content,
    arrayLast(e -> e.page_path != '', session).page_path AS exit_path,
    {channel} AS channel,
    pageviews = 1 AND NOT arrayExists(e -> e.kind = 2, session) AS is_bounce,
    {is_new_visitor} AS is_new_visitor,
    packed_first_browser AS browser,
    packed_first_os AS os,
    packed_first_device_type AS device_type,
    packed_first_country AS country,
    packed_first_region AS region,
    packed_first_city AS city,
    arrayExists(e -> e.is_bot, session) AS is_bot
FROM sessions
{"ORDER BY identity, started_at, first.message_id" if ordered else ""}
"""
    parameters: dict[str, Any] = {
        "timeout_ms": rules.inactivity_timeout_seconds * 1000,
        "max_length_ms": rules.max_length_seconds * 1000,
        "honour_client_session_id": rules.honour_client_session_id,
        **channel_parameters,
    }
    if starts is not None:
        parameters.update(time_map_parameters("starts", starts))
        parameters["copy_spread_ms"] = int(copy_spread / timedelta(milliseconds=1))
        parameters["far_future"] = FAR_FUTURE
        parameters["read_floor"] = max(min(starts.values(), default=THE_EARLIEST) - copy_spread, THE_EARLIEST)
    else:
        assert window_to is not None
        parameters["window_from"] = THE_EARLIEST if window_from is None else window_from
        parameters["window_to"] = window_to
        parameters["read_from"] = THE_EARLIEST if window_from is None else window_from - copy_spread
        parameters["read_to"] = window_to + copy_spread
    if inserted_through is not None:
        parameters["inserted_through"] = inserted_through
    if identities is not None:
        parameters.update(long_list_parameter("identities", identities))
    if shard is not None:
        parameters["shard"], parameters["shards"] = shard
    if seen_before_start is not None:
        parameters.update(long_list_parameter("seen_before_start", seen_before_start))
    settings = {**LONG_LIST_SETTINGS, **(ONE_LEVEL_AGGREGATION if starts is not None else {})}
    return SessionsQuery(sql, parameters, settings)
