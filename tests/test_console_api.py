"""The endpoints the console reads, on real stacks: `GET /v1/health` (every role's node report in
KV HW_NODES, the consumers, the streams), `GET /v1/projects/{id}/live` (events sent through the
edge, newest first, and the edge's refusals with their reason codes) and
`POST /v1/projects/{id}/overview` (its numbers against a count in Python of the seeded rows)."""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from hw_funnels import store
from hw_testing import (
    StackFactory,
    admin_headers,
    basic_auth,
    create_project,
    eventually,
    stored_copies,
    track_event,
)

from headwater.analytics.funnels.reference import FunnelEvent
from headwater.core.service.nodereports import NODES_BUCKET, REPORT_TTL_SECONDS
from headwater.core.service.tasks import cancel_and_wait
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services

QUICK = 0.2  # seconds between node reports in these tests
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


async def health(http: httpx.AsyncClient, stack: Stack) -> dict[str, Any]:
    response = await http.get(f"{stack.control_url}/v1/health", headers=admin_headers())
    assert response.status_code == 200, response.text
    return dict(response.json())


def roles(answer: dict[str, Any]) -> set[str]:
    return {node["role"] for node in answer["nodes"]}


async def test_health_lists_each_role_and_loses_one_that_stops(
    make_stack: StackFactory, http: httpx.AsyncClient
) -> None:
    from hw_sessions import quick_sessionizer

    core = await make_stack(control=True, consumer=True, node_report_seconds=QUICK)
    assert core.settings.consumer is not None
    sessionizer = quick_sessionizer(core.settings.consumer.clickhouse_url)
    edge = await make_stack(edge=True, sessionizer=sessionizer, node_report_seconds=QUICK)
    answer = await eventually(
        lambda: health(http, core), lambda a: roles(a) == {"control", "consumer", "edge", "sessionizer"}
    )
    by_role = {node["role"]: node for node in answer["nodes"]}
    assert core.reporter is not None and edge.reporter is not None
    assert {node["node"] for node in answer["nodes"]} == {core.reporter.node}  # one process here
    assert by_role["edge"]["ready"] is True and by_role["edge"]["checks"]["nats"] is True
    assert by_role["edge"]["details"]["config"]["synced"] is True  # its own /readyz details
    assert by_role["consumer"]["checks"] == {"nats": True, "consuming": True, "healthy": True}
    assert "rounds" in by_role["sessionizer"]["details"]
    assert all(node["age_seconds"] < 5 for node in answer["nodes"])
    consumers = {(c["stream"], c["name"]) for c in answer["consumers"]}
    assert ("HW_EVENTS", "hw-clickhouse") in consumers and ("HW_IMPORTS", "hw-imports") in consumers
    events_stream = next(s for s in answer["streams"] if s["name"] == "HW_EVENTS")
    assert events_stream["max_bytes"] == -1 and events_stream["usage"] is None
    assert events_stream["max_age_seconds"] == 7 * 24 * 3600
    assert answer["dead_letters"] == {"messages": 0, "bytes": 0}

    # A request with a key no project has: a refusal without a project, summed over the edges.
    response = await http.post(
        f"{edge.edge_url}/v1/track", json=track_event(), headers=basic_auth("hwsk_nope")
    )
    assert response.status_code == 401
    answer = await eventually(lambda: health(http, core), lambda a: a["refusals_without_project"] != [])
    assert answer["refusals_without_project"] == [{"reason": "unknown_key", "count": 1}]

    # A node that stops reporting (hung, or killed: no clean stop) ages, and the bucket's TTL
    # removes its reports; a clean stop removes them at once.
    assert edge.reporter._task is not None
    await cancel_and_wait(edge.reporter._task)
    aged = await eventually(
        lambda: health(http, core),
        lambda a: any(n["role"] == "edge" and n["age_seconds"] >= 1.0 for n in a["nodes"]),
    )
    assert next(n for n in aged["nodes"] if n["role"] == "control")["age_seconds"] < 1.0
    js = core.nats.jetstream() if core.nats is not None else None
    assert js is not None
    assert (await (await js.key_value(NODES_BUCKET)).status()).ttl == REPORT_TTL_SECONDS
    await edge.stop()
    answer = await eventually(lambda: health(http, core), lambda a: roles(a) == {"control", "consumer"})
    await core.reporter.stop()  # the control plane's and the consumer's reports go too
    assert (await health(http, core))["nodes"] == []


def track(message_id: str, **fields: Any) -> dict[str, Any]:
    """A track event as a batch holds it."""
    return {"type": "track", **track_event(messageId=message_id, **fields)}


async def live(
    http: httpx.AsyncClient, stack: Stack, project_id: str, limit: str | None = None
) -> httpx.Response:
    params = {} if limit is None else {"limit": limit}
    return await http.get(
        f"{stack.control_url}/v1/projects/{project_id}/live", params=params, headers=admin_headers()
    )


async def test_live_shows_the_last_events_and_why_the_edge_refused(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    stack = await make_stack(edge=True, control=True, consumer=True, node_report_seconds=QUICK)
    origin = "https://shop.example"
    created = await create_project(http, stack, project_id, allowed_origins=[origin])
    secret, public = str(created["secret_key"]), str(created["public_key"])
    first = [track("m1", event="Viewed"), track("m2", event="Added")]
    response = await http.post(
        f"{stack.edge_url}/v1/batch", json={"batch": first}, headers=basic_auth(secret)
    )
    assert response.status_code == 200, response.text
    await eventually(lambda: stored_copies(stack, project_id), lambda copies: len(copies) == 2)
    page = {"type": "page", "anonymousId": "a-9", "messageId": "m3", "name": "Pricing",
            "context": {"page": {"url": f"{origin}/pricing", "path": "/pricing"}}}  # fmt: skip
    response = await http.post(
        f"{stack.edge_url}/v1/page",
        json=page,
        headers=basic_auth(public) | {"Origin": origin, "User-Agent": CHROME},
    )
    assert response.status_code == 200, response.text
    await eventually(lambda: stored_copies(stack, project_id), lambda copies: len(copies) == 3)

    # Refused: the public key from an origin the project does not allow; a track without a name;
    # and in a batch that is otherwise accepted, one event without any id.
    wrong = await http.post(
        f"{stack.edge_url}/v1/track",
        json=track_event(),
        headers=basic_auth(public) | {"Origin": "https://evil.example"},
    )
    assert (wrong.status_code, wrong.json()["code"]) == (403, "origin_not_allowed")
    nameless = await http.post(
        f"{stack.edge_url}/v1/track", json={"userId": "u", "messageId": "x1"}, headers=basic_auth(secret)
    )
    assert (nameless.status_code, nameless.json()["code"]) == (400, "missing_field")
    partly = await http.post(
        f"{stack.edge_url}/v1/batch",
        json={"batch": [track("m4"), {"type": "track", "event": "No one"}]},
        headers=basic_auth(secret),
    )
    assert partly.status_code == 200 and partly.json()["rejected"][0]["code"] == "missing_field"
    await eventually(lambda: stored_copies(stack, project_id), lambda copies: len(copies) == 4)

    def refused_three(response: httpx.Response) -> bool:
        return response.status_code == 200 and len(response.json()["refusals"]["recent"]) == 3

    answer = (await eventually(lambda: live(http, stack, project_id), refused_three)).json()
    events = answer["events"]
    assert [event["message_id"] for event in events] == ["m4", "m3", "m1", "m2"]  # newest first
    pricing = events[1]
    assert {k: pricing[k] for k in ("type", "event", "anonymous_id", "user_id", "path", "url")} == {
        "type": "page", "event": "Pricing", "anonymous_id": "a-9", "user_id": "",
        "path": "/pricing", "url": f"{origin}/pricing",
    }  # fmt: skip
    assert events[0]["received_at"] > events[1]["received_at"] > events[2]["received_at"]
    assert events[2]["received_at"] == events[3]["received_at"]  # one request: message id order
    assert (pricing["is_bot"], pricing["browser"]) == (False, "Chrome")
    assert pricing["timestamp"].endswith("Z")

    refusals = answer["refusals"]
    assert refusals["window_seconds"] == 3600
    assert refusals["counts"] == [
        {"reason": "missing_field", "count": 2},
        {"reason": "origin_not_allowed", "count": 1},
    ]
    assert stack.reporter is not None
    recent = refusals["recent"]
    assert [(r["reason"], r["field"]) for r in recent] == [
        ("missing_field", "userId"),
        ("missing_field", "event"),
        ("origin_not_allowed", None),
    ]
    assert all(r["node"] == stack.reporter.node for r in recent)
    assert "https://evil.example" in recent[2]["message"]
    assert recent[0]["at"] >= recent[1]["at"] >= recent[2]["at"]
    text = orjson.dumps(answer).decode()
    assert secret not in text and public not in text  # never a key

    one = await live(http, stack, project_id, "1")
    assert [event["message_id"] for event in one.json()["events"]] == ["m4"]
    for bad in ("0", "201", "ten", "-1"):
        refused = await live(http, stack, project_id, bad)
        assert (refused.status_code, refused.json()["code"], refused.json()["field"]) == (
            400,
            "invalid_field",
            "limit",
        ), bad
    unknown = await live(http, stack, "no_such_project")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "project_not_found")
    # Another project sees none of these refusals.
    other = await create_project(http, stack, project_id + "_b")
    assert other
    assert (await live(http, stack, project_id + "_b")).json()["refusals"]["counts"] == []


# -- overview -------------------------------------------------------------------------------------

DAY0 = datetime(2026, 11, 2, tzinfo=UTC)
FROM, TO = DAY0, DAY0 + timedelta(days=2)


def at(hours: float) -> datetime:
    return DAY0 + timedelta(hours=hours)


def event(message_id: str, kind: str, hours: float, user: str = "", anonymous: str = "", path: str = "",
          bot: bool = False) -> FunnelEvent:  # fmt: skip
    name = "Signed Up" if kind == "track" else path
    return FunnelEvent(message_id, kind, name, anonymous, user, at(hours), at(hours), f"r-{message_id}",
                       page_path=path, is_bot=bot)  # fmt: skip


EVENTS = [
    event("e1", "page", 10.25, user="u1", anonymous="a1", path="/pricing"),
    event("e2", "track", 10.3, user="u1", anonymous="a1"),
    event("e3", "page", 23.99, anonymous="a2", path="/pricing"),
    event("e4", "page", 32, anonymous="a2", path="/docs"),
    event("e5", "page", 33, user="u3", anonymous="a3", path="/docs"),
    event("e5", "page", 33, user="u3", anonymous="a3", path="/docs"),  # a copy: counted once
    event("e6", "page", 33.5, anonymous="b1", path="/pricing", bot=True),
    event("e9", "page", 40, user="u5", path=""),  # a page view without a path: not a top page
    event("e7", "page", -0.1, user="u1", path="/pricing"),  # before `from`
    event("e8", "track", 48, user="u4"),  # at `to`: after the range
]

Session = tuple[str, str, float, float, bool, str, str, str, str, str, bool, int]
# id, identity, start (hours), duration (s), bounce, referrer host, channel, country, browser,
# device, bot, version
SESSIONS: list[Session] = [
    ("s1", "u1", 10.25, 300, False, "google.com", "Organic Search", "Germany", "Chrome", "desktop", False, 1),
    ("s2", "a2", 23.99, 0, True, "", "Direct", "France", "Firefox", "desktop", False, 1),
    ("s3", "a2", 32, 0, True, "news.ycombinator.com", "Referral", "France", "Firefox", "mobile", False, 1),
    ("s4", "u3", 33, 30, False, "google.com", "Organic Search", "Germany", "Chrome", "desktop", False, 1),
    ("s4", "u3", 33, 60, False, "google.com", "Organic Search", "Germany", "Chrome", "desktop", False, 2),
    ("s5", "b1", 33.5, 5, True, "spam.example", "Referral", "", "", "bot", True, 1),
    ("s6", "u1", -0.1, 10, True, "", "Direct", "Germany", "Chrome", "desktop", False, 1),
]  # fmt: skip


def store_sessions(stack: Stack, project_id: str, sessions: list[Session]) -> None:
    columns = ["session_id", "identity", "started_at", "ended_at", "visit_started_at", "duration_seconds",
               "is_bounce", "referrer_host", "channel", "country", "browser", "device_type", "is_bot",
               "version", "is_deleted"]  # fmt: skip
    rows = [
        [sid, identity, at(start), at(start) + timedelta(seconds=duration), at(start), float(duration),
         bounce, referrer, channel, country, browser, device, bot, version, 0]
        for sid, identity, start, duration, bounce, referrer, channel, country, browser, device, bot, version
        in sessions
    ]  # fmt: skip
    assert stack.clickhouse is not None
    stack.clickhouse.insert(f"hw_{project_id}.sessions", rows, column_names=columns)


def expected(include_bots: bool) -> dict[str, Any]:
    """The overview counted in Python over EVENTS and SESSIONS."""
    events = {e.message_id: e for e in EVENTS if FROM <= e.timestamp < TO and (include_bots or not e.is_bot)}
    latest: dict[str, Session] = {}
    for session in SESSIONS:
        if session[0] not in latest or session[11] > latest[session[0]][11]:
            latest[session[0]] = session
    sessions = [s for s in latest.values() if FROM <= at(s[2]) < TO and (include_bots or not s[10])]
    pages = [e for e in events.values() if e.type == "page"]

    def top(values: list[str]) -> list[dict[str, Any]]:
        counted = Counter(v for v in values if v)
        return [{"value": v, "count": n} for v, n in sorted(counted.items(), key=lambda c: (-c[1], c[0]))]

    durations = [float(s[3]) for s in sessions]
    return {
        "totals": {
            "events": len(events),
            "pageviews": len(pages),
            "visitors": len({e.user_id or e.anonymous_id for e in events.values()}),
            "sessions": len(sessions),
            "bounce_rate": sum(s[4] for s in sessions) / len(sessions),
            "avg_session_seconds": statistics.mean(durations),
            "median_session_seconds": statistics.median(durations),
        },
        "top": {
            "pages": top([e.page_path for e in pages]),
            "referrers": top([s[5] for s in sessions]),
            "channels": top([s[6] for s in sessions]),
            "countries": top([s[7] for s in sessions]),
            "browsers": top([s[8] for s in sessions]),
            "devices": top([s[9] for s in sessions]),
        },
        "days": [
            (
                day,
                sum(1 for e in events.values() if e.timestamp.date() == day.date()),
                sum(1 for s in sessions if at(s[2]).date() == day.date()),
            )
            for day in (FROM, FROM + timedelta(days=1))
        ],
    }


async def overview(http: httpx.AsyncClient, stack: Stack, project_id: str, **body: Any) -> httpx.Response:
    asked = {"from": FROM.isoformat(), "to": TO.isoformat(), **body}
    return await http.post(
        f"{stack.control_url}/v1/projects/{project_id}/overview", json=asked, headers=admin_headers()
    )


async def test_the_overview_counts_what_the_tables_hold(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    stack = await make_stack(control=True)
    await create_project(http, stack, project_id)
    assert stack.clickhouse is not None
    await asyncio.to_thread(store, stack.clickhouse, f"hw_{project_id}", EVENTS)
    await asyncio.to_thread(store_sessions, stack, project_id, SESSIONS)

    for include_bots in (False, True):
        response = await overview(http, stack, project_id, include_bots=include_bots)
        assert response.status_code == 200, response.text
        answer, want = response.json(), expected(include_bots)
        assert answer["totals"] == pytest.approx(want["totals"]), include_bots
        assert answer["top"] == want["top"], include_bots
        assert [(p["t"], p["events"], p["sessions"]) for p in answer["series"]] == [
            (day.isoformat().replace("+00:00", "Z"), events, sessions)
            for day, events, sessions in want["days"]
        ]
    assert answer["totals"]["events"] == 7 and answer["totals"]["sessions"] == 5  # bots included last

    # By hour: every hour of the two days, zero-filled; the series adds up to the totals.
    hourly = (await overview(http, stack, project_id, interval="hour")).json()
    series = hourly["series"]
    assert [p["t"] for p in series] == [
        (FROM + timedelta(hours=h)).isoformat().replace("+00:00", "Z") for h in range(48)
    ]
    assert sum(p["events"] for p in series) == hourly["totals"]["events"] == 6
    assert sum(p["pageviews"] for p in series) == hourly["totals"]["pageviews"] == 5
    assert sum(p["sessions"] for p in series) == hourly["totals"]["sessions"] == 4
    assert [(p["events"], p["visitors"]) for p in series if p["events"]] == [
        (2, 1),
        (1, 1),
        (1, 1),
        (1, 1),
        (1, 1),
    ]
    assert series[10] == {
        "t": "2026-11-02T10:00:00Z",
        "events": 2,
        "pageviews": 1,
        "visitors": 1,
        "sessions": 1,
    }
    # A range not on bucket boundaries: the buckets holding its first and last moments.
    odd = await overview(
        http, stack, project_id, interval="hour", **{"from": at(10.5).isoformat(), "to": at(12.5).isoformat()}
    )
    assert [p["t"][11:13] for p in odd.json()["series"]] == ["10", "11", "12"]
    # The top lists' limit.
    limited = (await overview(http, stack, project_id, limit=1)).json()["top"]
    assert limited["pages"] == [{"value": "/docs", "count": 2}]
    assert all(len(values) <= 1 for values in limited.values())
    # An empty range: zeros, never NaN.
    empty = await overview(
        http, stack, project_id, **{"from": "2020-01-01T00:00:00Z", "to": "2020-01-03T00:00:00Z"}
    )
    zeros = dict.fromkeys(("events", "pageviews", "visitors", "sessions"), 0)
    averages = dict.fromkeys(("bounce_rate", "avg_session_seconds", "median_session_seconds"), 0.0)
    assert empty.json()["totals"] == zeros | averages
    assert [p["events"] for p in empty.json()["series"]] == [0, 0]

    # Refused: each with its code and field.
    cases = [
        ({"to": FROM.isoformat()}, "to"),  # from >= to
        ({"from": (TO - timedelta(days=401)).isoformat()}, "to"),  # over 400 days
        (
            {"from": (TO - timedelta(days=32)).isoformat(), "interval": "hour"},
            "interval",
        ),  # hourly, > 31 days
        ({"interval": "week"}, "interval"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"include_bots": "yes"}, "include_bots"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-11-02T00:00:00"}, "from"),  # no time zone
        ({"colour": "red"}, "colour"),
    ]
    for body, field in cases:
        refused = await overview(http, stack, project_id, **body)
        assert (refused.status_code, refused.json()["code"], refused.json().get("field")) == (
            400,
            "invalid_field",
            field,
        ), body
    assert (
        await overview(
            http, stack, project_id, interval="day", **{"from": (TO - timedelta(days=400)).isoformat()}
        )
    ).status_code == 200
    unknown = await overview(http, stack, "no_such_project")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "project_not_found")
