"""Cookieless visitor ids through the edge, on real NATS: two edges sharing one NATS and a clock
the test moves across UTC days (docs/privacy.md#cookieless-visitors)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hw_testing import StackFactory, admin_headers, basic_auth, create_project, eventually, track_event
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError

from headwater.core.service.httpapp import Readiness
from headwater.core.wire.envelope import Envelope, unpack
from headwater.core.wire.subjects import EVENTS_STREAM, events_subject
from headwater.edge.app import create_app
from headwater.edge.cookieless import CARRIED_BUCKET, SALTS_BUCKET, CookielessIds, salt_key
from headwater.edge.metrics import EdgeMetrics
from headwater.edge.settings import EdgeSettings
from headwater.edge.sink import JetStreamSink
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services
ORIGIN = "https://shop.example"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"
DAY_1 = datetime(2026, 12, 6, tzinfo=UTC)


def _ready() -> Readiness:
    return Readiness({"nats": True})


@dataclass
class Clock:
    now: datetime = DAY_1

    def __call__(self) -> datetime:
        return self.now

    def at(self, days: int, hours: int, minutes: int = 0) -> None:
        self.now = DAY_1 + timedelta(days=days, hours=hours, minutes=minutes)


@dataclass
class Edges:
    """Edges on the same NATS and project registry, each with its own memory and the same clock."""

    stack: Stack
    clients: list[httpx.AsyncClient]
    keys: dict[str, str] = field(default_factory=dict)  # project id → public key
    secret_keys: dict[str, str] = field(default_factory=dict)
    clock: Clock = field(default_factory=Clock)
    metrics: list[EdgeMetrics] = field(default_factory=list)

    @property
    def js(self) -> JetStreamContext:
        assert self.stack.nats is not None
        return self.stack.nats.jetstream()

    async def send(
        self,
        project: str,
        event: dict[str, Any] | bytes | None = None,
        edge: int = 0,
        ip: str = "203.0.113.77",
        user_agent: str = BROWSER,
        origin: str | None = ORIGIN,
        secret: bool = False,
    ) -> httpx.Response:
        headers = {"User-Agent": user_agent, "X-Forwarded-For": ip}
        headers |= basic_auth(self.secret_keys[project] if secret else self.keys[project])
        if origin is not None:
            headers["Origin"] = origin
        body = event if event is not None else {"event": "Viewed", "properties": {"n": 1}}
        if isinstance(body, bytes):
            headers["Content-Type"] = "application/json"
            return await self.clients[edge].post("/v1/track", content=body, headers=headers)
        return await self.clients[edge].post("/v1/track", json=body, headers=headers)

    async def last_message(self, project: str) -> bytes:
        message = await self.js.get_last_msg(EVENTS_STREAM, events_subject(project))
        assert message.data is not None
        return unpack(message.data)

    async def stored_event(self, project: str, **send: Any) -> tuple[dict[str, Any], Envelope, bytes]:
        """Send one event; the event as published, its envelope and the message's bytes."""
        response = await self.send(project, **send)
        assert response.status_code == 200, response.text
        data = await self.last_message(project)
        envelope = Envelope.decode(data)
        assert envelope.request_id == response.json()["request_id"]
        return envelope.events[0], envelope, data

    async def visitor(self, project: str, **send: Any) -> str:
        event, _, _ = await self.stored_event(project, **send)
        return str(event["anonymousId"])

    async def project(self, project: str, http: httpx.AsyncClient, mode: str, **settings: Any) -> None:
        created = await create_project(
            http,
            self.stack,
            project,
            allowed_origins=[ORIGIN, "https://other.example"],
            settings={"cookieless": {"mode": mode}, **settings},
        )
        self.keys[project] = str(created["public_key"])
        self.secret_keys[project] = str(created["secret_key"])


@pytest.fixture
async def edges(make_stack: StackFactory) -> AsyncIterator[Edges]:
    stack: Stack = await make_stack(edge=True, control=True)
    assert stack.nats is not None and stack.registry is not None
    clock = Clock()
    settings = EdgeSettings(port=0, trusted_proxies=("127.0.0.0/8",))
    clients, metrics = [], []
    for _ in range(2):
        sink = JetStreamSink(stack.nats, 2.0)
        ids = CookielessIds.on_jetstream(stack.nats.jetstream())
        metrics.append(EdgeMetrics())
        app = create_app(settings, sink, stack.registry, _ready, metrics[-1], cookieless=ids, clock=clock)
        clients.append(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge"))
    yield Edges(stack, clients, clock=clock, metrics=metrics)
    for client in clients:
        await client.aclose()


async def test_ids_last_a_day_carry_across_midnight_and_change_on_the_third_day(
    edges: Edges, http: httpx.AsyncClient, project_id: str
) -> None:
    await edges.project(project_id, http, "always")
    clock = edges.clock
    clock.at(0, 10)
    first = await edges.visitor(project_id)
    other = await edges.visitor(project_id, ip="198.51.100.9")  # seen in the morning only
    assert first.startswith("cl_") and other.startswith("cl_") and first != other
    clock.at(0, 18)
    assert await edges.visitor(project_id, edge=1) == first  # the other edge: the same id
    clock.at(0, 23, 50)  # within the project's inactivity timeout (30 min) of midnight
    assert await edges.visitor(project_id) == first
    clock.at(1, 0, 10)  # the visit goes on after midnight, on the other edge
    assert await edges.visitor(project_id, edge=1) == first
    clock.at(1, 15)  # and the visitor keeps the id for the day
    assert await edges.visitor(project_id) == first
    assert await edges.visitor(project_id, edge=1) == first
    # Not seen before midnight: a new day's id.
    second_day_other = await edges.visitor(project_id, ip="198.51.100.9")
    assert second_day_other not in (other, first)
    assert await edges.visitor(project_id, ip="198.51.100.9", edge=1) == second_day_other
    clock.at(2, 12)  # the third day
    third = await edges.visitor(project_id)
    assert third not in (first, second_day_other)
    assert await edges.visitor(project_id, edge=1) == third


async def test_each_input_of_the_hash_makes_another_visitor(
    edges: Edges, http: httpx.AsyncClient, project_id: str
) -> None:
    await edges.project(project_id, http, "always")
    edges.clock.at(0, 9)
    base = await edges.visitor(project_id)
    assert await edges.visitor(project_id, edge=1) == base
    # The same address written as IPv4-mapped IPv6 is the same client.
    assert await edges.visitor(project_id, ip="::ffff:203.0.113.77") == base
    variants = {
        await edges.visitor(project_id, ip="203.0.113.78"),
        await edges.visitor(project_id, user_agent=BROWSER + " other"),
        await edges.visitor(project_id, origin="https://other.example"),
    }
    assert base not in variants and len(variants) == 3
    other_project = project_id + "_b"
    await edges.project(other_project, http, "always")
    assert await edges.visitor(other_project) not in (variants | {base})


async def test_salts_are_shared_and_deleted_once_older_than_yesterday(
    edges: Edges, http: httpx.AsyncClient, project_id: str
) -> None:
    await edges.project(project_id, http, "always")
    js = edges.js
    edges.clock.at(0, 12)
    await edges.visitor(project_id)
    await edges.visitor(project_id, edge=1)
    salts = await js.key_value(SALTS_BUCKET)
    day_1 = salt_key(DAY_1.date())
    first_salt = (await salts.get(day_1)).value
    assert first_salt is not None and len(first_salt) == 32
    # The other edge read the first one's salt: one message in the bucket.
    info = await js.stream_info(f"KV_{SALTS_BUCKET}")
    assert info.state.messages == 1
    assert info.config.max_age == 48 * 3600  # the bucket itself forgets after 48 hours

    edges.clock.at(1, 12)
    await edges.visitor(project_id)
    # Asked whether the visitor was carried from yesterday: that bucket forgets after 36 hours.
    carried = await js.stream_info(f"KV_{CARRIED_BUCKET}")
    assert carried.config.max_age == 36 * 3600
    assert (await salts.get(day_1)).value == first_salt  # yesterday's: kept, for carried visits
    edges.clock.at(2, 12)
    await edges.visitor(project_id, edge=1)
    with pytest.raises(KeyNotFoundError):
        await salts.get(day_1)
    assert sorted(await salts.keys()) == [salt_key((DAY_1 + timedelta(days=d)).date()) for d in (1, 2)]
    # Purged: no message of the stream holds the first day's salt any more.
    info = await js.stream_info(f"KV_{SALTS_BUCKET}")
    held = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            held.append((await js.get_msg(f"KV_{SALTS_BUCKET}", sequence)).data or b"")
        except NotFoundError:  # a sequence the purge removed
            continue
    assert held and all(first_salt not in data for data in held)


async def test_no_full_address_leaves_the_edge(
    edges: Edges, http: httpx.AsyncClient, project_id: str
) -> None:
    await edges.project(project_id, http, "missing")
    event = track_event(anonymousId="a-1", context={"ip": "203.0.113.77", "page": {"url": ORIGIN}})
    _, envelope, data = await edges.stored_event(project_id, event=event)
    assert envelope.ip == "203.0.113.0"
    assert b"203.0.113.77" not in data
    _, envelope, data = await edges.stored_event(project_id, ip="2001:db8:85a3:1:2:3:4:5")
    assert envelope.ip == "2001:db8:85a3::"
    assert b"2001:db8:85a3:1" not in data
    # A browser's context.ip is dropped, however its key is written.
    escaped = (
        b'{"event": "Viewed", "anonymousId": "a-2", "context": {"\\u0069p": "203.0.113.77", "locale": "en"}}'
    )
    event, envelope, data = await edges.stored_event(project_id, event=escaped)
    assert event["context"] == {"locale": "en"} and b"203.0.113.77" not in data
    # Server-side events of the project too: the envelope's address and the address the server
    # relays (context.ip, in the event and in a batch's context) are networks.
    relayed = track_event(context={"ip": "198.51.100.23", "locale": "en"})
    event, envelope, data = await edges.stored_event(project_id, origin=None, secret=True, event=relayed)
    assert envelope.ip == "203.0.113.0" and b"203.0.113.77" not in data
    assert event["context"] == {"ip": "198.51.100.0", "locale": "en"} and b"198.51.100.23" not in data
    batch = {"batch": [{**track_event(), "type": "track"}], "context": {"ip": "2001:db8:1:2::9"}}
    response = await edges.clients[0].post(
        "/v1/batch", json=batch, headers=basic_auth(edges.secret_keys[project_id])
    )
    assert response.status_code == 200, response.text
    data = await edges.last_message(project_id)
    assert Envelope.decode(data).context == {"ip": "2001:db8:1::"} and b"2001:db8:1:2" not in data


async def test_missing_keeps_a_supplied_id_and_always_replaces_it(
    edges: Edges, http: httpx.AsyncClient, project_id: str
) -> None:
    missing, always, off = project_id, project_id + "_a", project_id + "_o"
    await edges.project(missing, http, "missing")
    await edges.project(always, http, "always")
    await edges.project(off, http, "off")
    supplied = {"event": "Viewed", "anonymousId": "a-1"}
    assert await edges.visitor(missing, event=supplied) == "a-1"
    replaced = await edges.visitor(always, event=supplied)
    assert replaced.startswith("cl_")
    # An event with no id at all is valid under the mode; refused without it.
    given = await edges.visitor(missing, event={"event": "Viewed"})
    assert given.startswith("cl_")
    event, _, _ = await edges.stored_event(missing, event={"event": "Viewed", "userId": "u-1"})
    assert event["anonymousId"] == given and event["userId"] == "u-1"
    refused = await edges.send(off, event={"event": "Viewed"})
    assert refused.status_code == 400 and refused.json()["code"] == "missing_field"
    # A batch: each event judged on its own; an empty id is no id.
    batch = {
        "batch": [
            {"type": "track", "event": "A", "anonymousId": "a-2"},
            {"type": "track", "event": "B"},
            {"type": "page", "name": "C", "anonymousId": ""},
        ]
    }
    response = await edges.clients[0].post(
        "/v1/batch",
        json=batch,
        headers={"Origin": ORIGIN, "User-Agent": BROWSER, "X-Forwarded-For": "203.0.113.77"}
        | basic_auth(edges.keys[missing]),
    )
    assert response.status_code == 200, response.text
    events = Envelope.decode(await edges.last_message(missing)).events
    assert [e["anonymousId"] for e in events] == ["a-2", given, given]
    counted = edges.metrics[0].render().decode()
    assert f'headwater_edge_cookieless_ids_total{{project="{missing}"}} 4.0' in counted
    assert f'headwater_edge_cookieless_ids_total{{project="{always}"}} 1.0' in counted


async def test_server_events_keep_their_ids(edges: Edges, http: httpx.AsyncClient, project_id: str) -> None:
    await edges.project(project_id, http, "always")
    event, _, _ = await edges.stored_event(
        project_id, origin=None, secret=True, event=track_event(anonymousId="server-7")
    )
    assert event["anonymousId"] == "server-7"
    event, _, _ = await edges.stored_event(project_id, origin=None, secret=True, event=track_event())
    assert "anonymousId" not in event and event["userId"] == "user-1"
    refused = await edges.send(project_id, origin=None, secret=True, event={"event": "Viewed"})
    assert refused.status_code == 400 and refused.json()["code"] == "missing_field"


async def test_without_salts_browser_events_wait(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    """An edge that cannot make cookieless ids answers 503 for the mode's events, never stores
    them with a made-up id."""
    stack: Stack = await make_stack(edge=True, control=True)
    assert stack.nats is not None and stack.registry is not None
    created = await create_project(
        http, stack, project_id, allowed_origins=[ORIGIN], settings={"cookieless": {"mode": "always"}}
    )
    app = create_app(EdgeSettings(port=0), JetStreamSink(stack.nats, 2.0), stack.registry, _ready)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        headers = {"Origin": ORIGIN} | basic_auth(str(created["public_key"]))
        response = await client.post("/v1/track", json={"event": "Viewed"}, headers=headers)
    assert response.status_code == 503 and response.json()["code"] == "cookieless_unavailable"
    assert response.headers["Retry-After"]


async def test_the_setting_is_validated_and_changes_live(
    edges: Edges, http: httpx.AsyncClient, project_id: str
) -> None:
    url = f"{edges.stack.control_url}/v1/projects"
    bad = await http.post(
        url,
        json={"id": project_id, "settings": {"cookieless": {"mode": "sometimes"}}},
        headers=admin_headers(),
    )
    assert bad.status_code == 400 and bad.json()["field"] == "settings.cookieless.mode"
    await edges.project(project_id, http, "off")
    assert await edges.visitor(project_id, event={"event": "Viewed", "anonymousId": "a-1"}) == "a-1"
    patched = await http.patch(
        f"{url}/{project_id}", json={"settings": {"cookieless": {"mode": "always"}}}, headers=admin_headers()
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["project"]["settings"]["cookieless"] == {"mode": "always"}

    async def visitor() -> str:
        return await edges.visitor(project_id, event={"event": "Viewed", "anonymousId": "a-1"})

    assert (await eventually(visitor, lambda v: v.startswith("cl_"), timeout=5)).startswith("cl_")


async def test_edges_racing_for_a_new_days_salt_agree(
    edges: Edges, http: httpx.AsyncClient, project_id: str
) -> None:
    """Both edges need the day's salt at once: one creates it, the other reads the winner's."""
    await edges.project(project_id, http, "always")
    for day in range(3):
        edges.clock.at(day, 8)
        answers = await asyncio.gather(edges.send(project_id, edge=0), edges.send(project_id, edge=1))
        assert [answer.status_code for answer in answers] == [200, 200]
        last = (await edges.js.stream_info(EVENTS_STREAM)).state.last_seq
        published = [
            Envelope.decode(unpack((await edges.js.get_msg(EVENTS_STREAM, seq)).data or b""))
            for seq in (last - 1, last)
        ]
        assert {e.request_id for e in published} == {answer.json()["request_id"] for answer in answers}
        [visitor] = {e.events[0]["anonymousId"] for e in published}
        assert visitor.startswith("cl_")


async def test_snowplow_events_get_the_same_cookieless_ids(
    edges: Edges, http: httpx.AsyncClient, project_id: str
) -> None:
    """A Snowplow tracker's events (tp2, the key as the app id) go through the same mode: under
    `always` the tracker's domain user id gives way to the visitor's cookieless id, the one a
    Segment event of the same browser, address and site gets, and only the network is stored."""
    await edges.project(project_id, http, "always")
    segment_visitor = await edges.visitor(project_id, event={"event": "Viewed", "anonymousId": "a-1"})
    body = {
        "schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
        "data": [
            {"e": "pv", "tv": "js-3.24.0", "p": "web", "aid": edges.keys[project_id], "duid": "device-1",
             "url": f"{ORIGIN}/pricing", "eid": "5d1d6a34-0000-4000-8000-000000000001"},
        ],
    }  # fmt: skip
    headers = {"Origin": ORIGIN, "User-Agent": BROWSER, "X-Forwarded-For": "203.0.113.77"}
    response = await edges.clients[1].post("/com.snowplowanalytics.snowplow/tp2", json=body, headers=headers)
    assert response.status_code == 200, response.text
    data = await edges.last_message(project_id)
    [event] = Envelope.decode(data).events
    assert event["anonymousId"] == segment_visitor and segment_visitor.startswith("cl_")
    assert b"device-1" not in data and b"203.0.113.77" not in data
    assert Envelope.decode(data).ip == "203.0.113.0"
