"""The sessions query on the embedded ClickHouse against the reference sessionizer: a property test
on random event streams, and named examples of each rule (docs/sessions.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from headwater.analytics.sessions import channels
from headwater.analytics.sessions.query import CLIENT_SESSION_ID, SESSION_COLUMNS, sessions_query
from headwater.analytics.sessions.reference import (
    SessionRow,
    StoredEvent,
    client_session_id,
    session_id,
    sessionize,
)
from headwater.core.migrations import m0006_client_session_id
from headwater.core.projects.settings import Sessions

pytestmark = pytest.mark.services

T0 = datetime(2026, 3, 1, tzinfo=UTC)
EVERYTHING = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))


def _stand_in_channel_of(
    referrer_host: str, page_host: str, utm_source: str, utm_medium: str, utm_campaign: str
) -> channels.Channel:
    if utm_medium != "":
        return "other"
    return "direct" if referrer_host == "" else "referral"


def _stand_in_channel_sql(
    referrer_host: str, page_host: str, utm_source: str, utm_medium: str, utm_campaign: str
) -> tuple[str, dict[str, Any]]:
    return f"multiIf({utm_medium} != '', 'other', {referrer_host} = '', 'direct', 'referral')", {}


@pytest.fixture(autouse=True)
def channel_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The channel grouping's own rules when they exist; until then one trivial rule in both forms,
    so the channel column is still compared (the rules themselves are tested on their own)."""
    try:
        channels.channel_of("", "", "", "", "")
    except NotImplementedError:
        monkeypatch.setattr(channels, "channel_of", _stand_in_channel_of)
        monkeypatch.setattr(channels, "channel_sql", _stand_in_channel_sql)


@pytest.fixture
def events_table(clickhouse: Client, project_id: str) -> tuple[Client, str]:
    return clickhouse, f"hw_{project_id}"


_STORED_COLUMNS = [
    "message_id", "type", "anonymous_id", "user_id", "timestamp", "received_at", "request_id",
    "context", "page_url", "page_host", "page_path", "referrer", "referrer_host", "utm_source",
    "utm_medium", "utm_campaign", "utm_term", "utm_content", "browser", "os", "device_type",
    "country", "region", "city", "is_bot",
]  # fmt: skip


def store(client: Client, database: str, stored: Sequence[StoredEvent]) -> None:
    client.command(f"TRUNCATE TABLE `{database}`.events")
    rows = []
    for event in stored:
        fields = asdict(event)
        sid = fields.pop("client_session_id")
        fields["context"] = json.dumps({"sessionId": sid} if sid else {})
        rows.append([fields[column] for column in _STORED_COLUMNS])
    if rows:
        # As copies arriving in separate inserts are stored: a single insert would collapse them
        # (ReplacingMergeTree merges an inserted block, keeping the last row of a message id).
        client.insert(
            f"`{database}`.events", rows, column_names=_STORED_COLUMNS, settings={"optimize_on_insert": 0}
        )


def queried(
    client: Client,
    database: str,
    rules: Sessions,
    window: tuple[datetime, datetime] = EVERYTHING,
    identities: Sequence[str] | None = None,
) -> list[SessionRow]:
    built = sessions_query(database, rules, window[0], window[1], identities)
    result = client.query(built.sql, parameters=built.parameters)
    assert not result.result_rows or tuple(result.column_names) == SESSION_COLUMNS
    rows = []
    for values in result.result_rows:
        row = dict(zip(SESSION_COLUMNS, values, strict=True))
        for column in ("started_at", "ended_at", "visit_started_at"):
            row[column] = row[column].replace(tzinfo=UTC)
        for column in ("is_bounce", "is_new_visitor", "is_bot"):
            row[column] = bool(row[column])
        rows.append(SessionRow(**row))
    return rows


def expected(
    stored: Sequence[StoredEvent],
    rules: Sessions,
    window: tuple[datetime, datetime] = EVERYTHING,
    identities: Sequence[str] | None = None,
) -> list[SessionRow]:
    return sessionize(stored, rules, window[0], window[1], identities)


def assert_same(actual: list[SessionRow], wanted: list[SessionRow]) -> None:
    """Equal rows; else the first differing row's differing columns, readably."""
    for index, (got, want) in enumerate(zip(actual, wanted, strict=False)):
        differing = {k: (v, asdict(want)[k]) for k, v in asdict(got).items() if asdict(want)[k] != v}
        assert not differing, (
            f"row {index} ({want.identity}, {want.started_at}): (query, reference) {differing}"
        )
    assert len(actual) == len(wanted), f"{len(actual)} rows from the query, {len(wanted)} from the reference"


# --- the property -------------------------------------------------------------------------------

TIMEOUTS = (60, 1800)
MAX_LENGTHS = (60, 300, 86_400)


@st.composite
def streams(draw: st.DrawFn) -> tuple[Sessions, list[StoredEvent]]:
    rules = Sessions(
        inactivity_timeout_seconds=draw(st.sampled_from(TIMEOUTS)),
        max_length_seconds=draw(st.sampled_from(MAX_LENGTHS)),
        identity=draw(st.sampled_from(["anonymous_id", "user_id"])),
        honour_client_session_id=draw(st.booleans()),
    )
    timeout_ms = rules.inactivity_timeout_seconds * 1000
    gap_ms = st.one_of(
        st.sampled_from([0, 1, timeout_ms - 1, timeout_ms, timeout_ms + 1, 2 * timeout_ms]),
        st.integers(0, timeout_ms),
    )
    stored: list[StoredEvent] = []
    number = 0
    for visitor in range(draw(st.integers(1, 4))):
        anonymous_id = draw(st.sampled_from(["a1", "a2", "a3", ""]))
        user_id = draw(st.sampled_from(["u1", "u2"]))
        identifies_at = draw(st.integers(0, 12))
        moment = T0 + timedelta(milliseconds=draw(st.integers(0, 3 * timeout_ms)))
        for index in range(draw(st.integers(1, 12))):
            moment += timedelta(milliseconds=draw(gap_ms))
            number += 1
            kind = draw(st.sampled_from(["page", "page", "track", "identify", "screen"]))
            page = draw(st.sampled_from(["", "/", "/pricing"])) if kind in ("page", "screen") else ""
            utm = draw(st.sampled_from([("", ""), ("news", "email"), ("google", "cpc")]))
            event = StoredEvent(
                message_id=f"m{draw(st.integers(0, 3))}-{number}",
                type=kind,
                anonymous_id=anonymous_id,
                user_id=user_id if index >= identifies_at else "",
                timestamp=moment,
                received_at=moment + timedelta(seconds=draw(st.integers(0, 5))),
                request_id=f"r{number}",
                client_session_id=draw(st.sampled_from(["", "s1", "s2"])),
                page_url=f"https://shop.test{page}" if page else "",
                page_host="shop.test" if page else "",
                page_path=page,
                referrer=draw(st.sampled_from(["", "https://search.test/q"])) if page else "",
                referrer_host="search.test" if page and visitor % 2 else "",
                utm_source=utm[0] if page else "",
                utm_medium=utm[1] if page else "",
                utm_campaign="spring" if page and utm[0] else "",
                utm_term="shoes" if page and utm[0] == "google" else "",
                utm_content="a" if page and utm[0] == "news" else "",
                browser=draw(st.sampled_from(["Chrome", "Firefox"])),
                os="Linux",
                device_type=draw(st.sampled_from(["desktop", "mobile"])),
                country="DE",
                region="BE",
                city="Berlin",
                is_bot=draw(st.booleans()) and draw(st.booleans()),
            )
            stored.append(event)
            # A retried request: another receipt, a timestamp corrected by another skew.
            for copy in range(draw(st.integers(0, 2))):
                skew = timedelta(milliseconds=draw(st.integers(-300_000, 300_000)))
                stored.append(
                    replace(
                        event,
                        timestamp=event.timestamp + skew,
                        received_at=event.received_at + timedelta(seconds=draw(st.integers(-5, 5))),
                        request_id=f"r{number}-{copy}",
                    )
                )
    return rules, draw(st.permutations(stored))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=streams(), data=st.data())
def test_the_query_computes_the_reference_sessions(
    events_table: tuple[Client, str], stream: tuple[Sessions, list[StoredEvent]], data: st.DataObject
) -> None:
    client, database = events_table
    rules, stored = stream
    note(f"{rules}\n" + "\n".join(map(repr, stored)))
    store(client, database, stored)
    window = EVERYTHING
    if data.draw(st.booleans(), label="narrow window"):
        moments = sorted({e.timestamp for e in stored})
        window = (data.draw(st.sampled_from(moments)), data.draw(st.sampled_from(moments)) + timedelta(1))
    identities = data.draw(st.none() | st.lists(st.sampled_from(["a1", "a2", "u1", "zz"])), label="ids")
    assert_same(
        queried(client, database, rules, window, identities), expected(stored, rules, window, identities)
    )


# --- named examples -----------------------------------------------------------------------------


def event(
    number: int, at: timedelta, anonymous_id: str = "a1", kind: str = "page", **fields: Any
) -> StoredEvent:
    defaults: dict[str, Any] = {
        "user_id": "",
        "received_at": T0 + at,
        "request_id": f"r{number}",
        "client_session_id": "",
    }
    if kind == "page":
        defaults.update(page_url="https://shop.test/", page_host="shop.test", page_path="/")
    return StoredEvent(
        message_id=f"m{number:03}", type=kind, anonymous_id=anonymous_id, timestamp=T0 + at,
        **(defaults | fields),
    )  # fmt: skip


def minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


def agree(client: Client, database: str, stored: Sequence[StoredEvent], rules: Sessions) -> list[SessionRow]:
    store(client, database, stored)
    rows = queried(client, database, rules)
    assert_same(rows, expected(stored, rules))
    return rows


def test_a_gap_equal_to_the_timeout_stays_and_one_millisecond_more_starts_a_session(
    events_table: tuple[Client, str],
) -> None:
    rules = Sessions(inactivity_timeout_seconds=1800)
    stored = [
        event(1, minutes(0)),
        event(2, minutes(30)),
        event(3, minutes(60) + timedelta(milliseconds=1)),
    ]
    rows = agree(*events_table, stored, rules)
    assert [(r.events, r.started_at, r.duration_seconds) for r in rows] == [
        (2, T0, 1800.0),
        (1, T0 + minutes(60) + timedelta(milliseconds=1), 0.0),
    ]
    assert rows[0].session_id == session_id("a1", "m001")
    assert [r.is_new_visitor for r in rows] == [True, False]


def test_a_25_hour_visit_is_cut_at_the_maximum_length(events_table: tuple[Client, str]) -> None:
    stored = [event(n, minutes(20 * n)) for n in range(76)]  # every 20 minutes for 25 hours
    rows = agree(*events_table, stored, Sessions())
    assert [(r.events, r.started_at) for r in rows] == [(72, T0), (4, T0 + timedelta(hours=24))]


@pytest.mark.parametrize(
    ("tied_request", "counted_minute"),
    [
        ("e", 0),  # MD5("b") = 92eb… < MD5("e") = e167…: the first copy's hash is smaller
        ("c", 2),  # MD5("c") = 4a8a… < MD5("b"): the tied copy's
    ],
)
def test_the_copy_received_first_counts_then_the_smallest_request_hash(
    events_table: tuple[Client, str], tied_request: str, counted_minute: int
) -> None:
    first = event(1, minutes(0), received_at=T0 + minutes(1), request_id="b")
    retried = replace(first, timestamp=T0 + minutes(3), received_at=T0 + minutes(4), request_id="a")
    same_receipt = replace(first, timestamp=T0 + minutes(2), request_id=tied_request)
    rows = agree(*events_table, [retried, same_receipt, first, event(2, minutes(10))], Sessions())
    assert [(r.events, r.started_at) for r in rows] == [(2, T0 + minutes(counted_minute))]


def test_a_change_of_client_session_id_starts_a_session_when_honoured(
    events_table: tuple[Client, str],
) -> None:
    stored = [
        event(1, minutes(0), client_session_id="s1"),
        event(2, minutes(1), client_session_id=""),
        event(3, minutes(2), client_session_id="s1"),
        event(4, minutes(3), client_session_id="s2"),
    ]
    assert [r.events for r in agree(*events_table, stored, Sessions())] == [3, 1]
    unhonoured = Sessions(honour_client_session_id=False)
    assert [r.events for r in agree(*events_table, stored, unhonoured)] == [4]


def test_a_visitor_identifying_mid_session(events_table: tuple[Client, str]) -> None:
    stored = [
        event(1, minutes(0)),
        event(2, minutes(1), kind="identify", user_id="u1"),
        event(3, minutes(2), user_id="u1", page_path="/account"),
        event(4, minutes(3), anonymous_id="", user_id="u1", kind="track"),
    ]
    (by_anonymous, by_user) = agree(*events_table, stored, Sessions())
    assert (by_anonymous.identity, by_anonymous.user_id, by_anonymous.events) == ("a1", "u1", 3)
    assert by_anonymous.exit_path == "/account"
    assert (by_user.identity, by_user.anonymous_id, by_user.events) == ("u1", "", 1)
    following_users = agree(*events_table, stored, Sessions(identity="user_id"))
    assert [(r.identity, r.events, r.anonymous_id) for r in following_users] == [
        ("a1", 1, "a1"),
        ("u1", 3, "a1"),
    ]


def test_bounces_entries_and_events_without_an_identity(events_table: tuple[Client, str]) -> None:
    stored = [
        event(1, minutes(0), kind="track", anonymous_id="a1"),
        event(2, minutes(1), anonymous_id="a1", utm_source="news", utm_medium="email", page_path="/in"),
        event(3, minutes(0), anonymous_id="a2", referrer_host="search.test", kind="page"),
        event(4, minutes(1), anonymous_id="a2", kind="identify", user_id="u2"),
        event(5, minutes(0), anonymous_id="", kind="track"),
    ]
    first, second = agree(*events_table, stored, Sessions())
    assert (first.identity, first.entry_path, first.utm_medium, first.is_bounce) == (
        "a1",
        "/in",
        "email",
        False,
    )
    assert (second.identity, second.referrer_host, second.is_bounce) == ("a2", "search.test", True)


def test_entry_and_first_event_fields_of_any_bytes_and_length(events_table: tuple[Client, str]) -> None:
    """The fields read from a session's entry and first event travel packed in one string with
    their lengths: separators, zero bytes, multi-byte characters, empty and long values all come
    out as they went in."""
    odd = "a\x00b\x1fc|d,é\u2028"
    stored = [
        event(1, minutes(0), kind="track", browser="", os=odd, city="Zürich" * 3000, region="\x00"),
        event(2, minutes(1), referrer=odd, referrer_host="x" * 70_000, utm_source="", utm_medium=odd,
              utm_campaign="\x00\x00", utm_term=odd * 100, utm_content=" ", page_host="shop\x1f.test"),
    ]  # fmt: skip
    [row] = agree(*events_table, stored, Sessions())
    assert (row.entry_referrer, row.utm_medium, row.utm_term, row.os, row.region) == (
        odd, odd, odd * 100, odd, "\x00"
    )  # fmt: skip
    assert len(row.referrer_host) == 70_000 and row.city == "Zürich" * 3000


def test_a_window_and_a_list_of_identities(events_table: tuple[Client, str]) -> None:
    client, database = events_table
    stored = [
        event(1, minutes(0), anonymous_id="a1"),
        event(2, minutes(120), anonymous_id="a1"),
        event(3, minutes(120), anonymous_id="a2"),
        event(4, minutes(200), anonymous_id="a2"),
    ]
    store(client, database, stored)
    window = (T0 + minutes(100), T0 + minutes(150))
    rows = queried(client, database, Sessions(), window)
    assert rows == expected(stored, Sessions(), window)
    assert [(r.identity, r.is_new_visitor) for r in rows] == [("a1", False), ("a2", True)]
    only = queried(client, database, Sessions(), window, ["a2"])
    assert [r.identity for r in only] == ["a2"]
    # Seen within the copies' spread before the window, and long before it (the history check).
    assert [
        r.is_new_visitor
        for r in queried(client, database, Sessions(), (T0 + minutes(150), T0 + minutes(300)))
    ] == [False]
    early = (T0 + minutes(190), T0 + minutes(300))
    assert [(r.identity, r.is_new_visitor) for r in queried(client, database, Sessions(), early)] == [
        ("a2", False)
    ]


@pytest.mark.parametrize(
    "context",
    [
        '{"sessionId":"s1"}',
        '{"sessionId":5}',
        '{"sessionId":null}',
        '{"sessionId":true}',
        '{"sessionId":5.50}',
        '{"sessionId":{"a":1}}',
        '{"sessionId":"x"} trailing',
        '{"sessionId":"caf\\u00e9"}',
        '{"sessionId":"a","sessionId":"b"}',
        '{"other":{"sessionId":"x"}}',
        "{}",
        "[1]",
        "not json",
        "",
    ],
)
def test_the_client_session_id_is_read_as_the_query_reads_it(
    events_table: tuple[Client, str], context: str
) -> None:
    """Only a JSON string counts (a number or an object is no session id), in both forms."""
    client, database = events_table
    client.command(
        f"INSERT INTO `{database}`.events (message_id, anonymous_id, context)"
        " VALUES ('m', 'a', {c:String})",
        parameters={"c": context},
    )
    sql = f"SELECT {CLIENT_SESSION_ID}, client_session_id FROM `{database}`.events"
    [(computed, stored)] = client.query(sql).result_rows
    assert client_session_id(context) == computed == stored


def test_events_stored_before_migration_6_read_their_client_session_id_from_context(
    events_table: tuple[Client, str],
) -> None:
    """Parts written before the column existed compute it when read, as inserts do."""
    client, database = events_table
    insert = (
        f"INSERT INTO `{database}`.events (message_id, anonymous_id, context)"
        " VALUES ({m:String}, 'a', {c:String})"
    )
    client.command(f"ALTER TABLE `{database}`.events DROP COLUMN client_session_id")
    for number, context in enumerate(['{"sessionId":"s1"}', '{"sessionId":5}', "{}"]):
        client.command(insert, parameters={"m": f"m{number}", "c": context})
    for statement in m0006_client_session_id.statements(database, None):
        client.command(statement)
    client.command(insert, parameters={"m": "m3", "c": '{"sessionId":"s2"}'})
    rows = client.query(f"SELECT message_id, client_session_id FROM `{database}`.events ORDER BY message_id")
    assert rows.result_rows == [("m0", "s1"), ("m1", ""), ("m2", ""), ("m3", "s2")]
