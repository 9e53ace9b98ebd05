"""The browser SDK end to end: Debian's headless Chromium, driven by Playwright, loads a test page
from a local HTTP server, which loads headwater.js from the edge with the copy-paste snippet; the
events go through the edge, JetStream and a consumer into the embedded ClickHouse, where each test
checks its rows."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hw_browser import PageServer
from hw_testing import create_project, eventually, query_rows
from playwright.async_api import Browser, Page, Request, Response

from headwater.edge.sdkfile import SDK_PATH
from headwater.edge.settings import EdgeSettings
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack, StackSettings

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = (ROOT / "sdk" / "js" / "snippet.html").read_text()
# Quick batching and retries, so that the tests wait seconds, not the defaults' minutes.
FAST = {"flushInterval": 200, "retryDelay": 200, "maxRetryDelay": 1000}
ROWS = (
    "SELECT type, event, user_id, anonymous_id, page_path, page_query, referrer, properties, traits,"
    " origin, message_id, sent_at IS NOT NULL FROM events FINAL ORDER BY received_at, timestamp"
)
SESSIONS = (
    "SELECT type, event, JSONExtractString(context, 'sessionId') FROM events FINAL"
    " ORDER BY received_at, timestamp"
)


@dataclass
class Row:
    type: str
    event: str
    user_id: str
    anonymous_id: str
    page_path: str
    page_query: str
    referrer: str
    properties: dict[str, Any]
    traits: dict[str, Any]
    origin: str
    message_id: str
    has_sent_at: bool


def show_sdk(server: PageServer, sdk_url: str, options: dict[str, Any]) -> None:
    """`server`'s page: the documented snippet, pointed at `sdk_url`, calling init with `options`."""
    snippet = SNIPPET.replace("https://EDGE/sdk/v1/headwater.js", sdk_url).replace(
        "{ key: 'PUBLIC_KEY' }", json.dumps(options)
    )
    assert sdk_url in snippet and json.dumps(options) in snippet
    server.html = f"<!doctype html><html><head><title>Test page</title>{snippet}</head><body></body></html>"


@dataclass
class Site:
    """A project whose allowed origin is `pages`; `elsewhere` is an origin it does not allow."""

    stack: Stack
    http: httpx.AsyncClient
    project_id: str
    key: str
    pages: PageServer
    elsewhere: PageServer
    # What the browser saw of its /v1/batch requests: sent, answered (with the status), failed.
    sent: list[str] = field(default_factory=list)
    answered: list[tuple[str, int]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    async def rows(self) -> list[Row]:
        rows = await query_rows(self.http, self.stack, self.project_id, ROWS)
        return [
            Row(
                type=row[0],
                event=row[1],
                user_id=row[2],
                anonymous_id=row[3],
                page_path=row[4],
                page_query=row[5],
                referrer=row[6],
                properties=json.loads(row[7]),
                traits=json.loads(row[8]),
                origin=row[9],
                message_id=row[10],
                has_sent_at=bool(row[11]),
            )
            for row in rows
        ]

    async def sessions(self, count: int) -> list[tuple[str, str, str]]:
        """(type, event, context.sessionId) of the stored events, once there are `count`."""

        async def rows() -> list[tuple[str, str, str]]:
            return [
                (row[0], row[1], row[2])
                for row in await query_rows(self.http, self.stack, self.project_id, SESSIONS)
            ]

        return await eventually(rows, lambda rows: len(rows) >= count, timeout=30)

    async def wait_for(self, count: int, timeout: float = 30) -> list[Row]:
        """Polls until `count` rows are stored; a few seconds more would show any extra."""
        return await eventually(self.rows, lambda rows: len(rows) >= count, timeout=timeout)

    async def open(
        self, browser: Browser, host: str | None = None, server: PageServer | None = None, **options: Any
    ) -> Page:
        """A new tab on a page of `server` with the SDK loaded from the stack's edge and sending to
        `host` (default: the same edge)."""
        server = server or self.pages
        init = {"key": self.key, **FAST, **options}
        if host:
            init["host"] = host
        show_sdk(server, f"{self.stack.edge_url}{SDK_PATH}", init)
        context = await browser.new_context()
        page = await context.new_page()
        page.on("request", self._request)
        page.on("response", self._response)
        page.on("requestfailed", self._failed)
        await page.goto(server.origin + "/")
        await sdk_loaded(page)
        return page

    def _request(self, request: Request) -> None:
        if request.url.endswith("/v1/batch"):
            self.sent.append(request.url)

    def _response(self, response: Response) -> None:
        if response.url.endswith("/v1/batch"):
            self.answered.append((response.request.headers.get("origin", ""), response.status))

    def _failed(self, request: Request) -> None:
        if request.url.endswith("/v1/batch"):
            self.failed.append(request.url)


async def sdk_loaded(page: Page) -> None:
    """The snippet's stub has been replaced by the SDK (which then ran the queued calls)."""
    await page.wait_for_function("window.headwater && !Array.isArray(window.headwater)")


@pytest.fixture
async def site(
    make_stack: Any, http: httpx.AsyncClient, project_id: str, page_servers: tuple[PageServer, PageServer]
) -> Site:
    stack = await make_stack(edge=True, control=True, consumer=True)
    pages, elsewhere = page_servers
    created = await create_project(http, stack, project_id, name="SDK", allowed_origins=[pages.origin])
    return Site(stack, http, project_id, created["public_key"], pages, elsewhere)


async def test_a_page_view(site: Site, browser: Browser) -> None:
    await site.open(browser)
    [row] = await site.wait_for(1)
    assert (row.type, row.page_path, row.origin, row.has_sent_at) == ("page", "/", site.pages.origin, True)
    assert row.properties["url"] == site.pages.origin + "/"
    assert row.properties["title"] == "Test page"
    assert len(row.anonymous_id) == 36 and len(row.message_id) == 36


async def test_single_page_app_navigations(site: Site, browser: Browser) -> None:
    page = await site.open(browser)
    await site.wait_for(1)
    await page.evaluate("history.pushState({}, '', '/pricing')")
    await page.evaluate("history.replaceState({}, '', '/pricing?plan=pro')")
    await page.evaluate("history.pushState({}, '', '/pricing?plan=pro')")  # the same URL: no page view
    await page.evaluate("history.go(-2)")  # back to / (a popstate)
    await page.wait_for_url(site.pages.origin + "/")
    rows = await site.wait_for(4)
    views = sorted((row.page_path, row.page_query, row.referrer) for row in rows)
    origin = site.pages.origin
    assert [row.type for row in rows] == ["page"] * 4
    assert views == [
        ("/", "", ""),
        ("/", "", f"{origin}/pricing?plan=pro"),
        ("/pricing", "", f"{origin}/"),
        ("/pricing", "plan=pro", f"{origin}/pricing"),
    ]
    assert len({row.anonymous_id for row in rows}) == 1


async def test_track_with_properties(site: Site, browser: Browser) -> None:
    page = await site.open(browser)
    await page.evaluate(
        "headwater.track('Signed Up', {plan: 'pro', seats: 3, trial: true, tags: ['a', 'b'], nested: {x: 1}})"
    )
    rows = await site.wait_for(2)
    [track] = [row for row in rows if row.type == "track"]
    assert track.event == "Signed Up"
    assert track.properties == {
        "plan": "pro",
        "seats": 3,
        "trial": True,
        "tags": ["a", "b"],
        "nested": {"x": 1},
    }
    assert track.anonymous_id == rows[0].anonymous_id


async def test_identify_then_track_carries_the_user_id(site: Site, browser: Browser) -> None:
    page = await site.open(browser)
    await page.evaluate("headwater.identify('user-42', {email: 'ada@example.com', plan: 'pro'})")
    await page.evaluate("headwater.track('Upgraded')")
    rows = {row.type: row for row in await site.wait_for(3)}
    assert rows["page"].user_id == ""
    assert rows["identify"].user_id == "user-42"
    assert rows["identify"].traits == {"email": "ada@example.com", "plan": "pro"}
    assert (rows["track"].event, rows["track"].user_id) == ("Upgraded", "user-42")
    assert len({row.anonymous_id for row in rows.values()}) == 1


async def test_events_of_a_session_share_its_id_across_a_reload(site: Site, browser: Browser) -> None:
    page = await site.open(browser)
    await page.evaluate("headwater.track('Before reload')")
    await site.wait_for(2)
    await page.reload()
    await sdk_loaded(page)
    await page.evaluate("headwater.track('After reload')")
    rows = await site.sessions(4)
    assert sorted((kind, event) for kind, event, _ in rows) == [
        ("page", ""),
        ("page", ""),
        ("track", "After reload"),
        ("track", "Before reload"),
    ]
    [session_id] = {session_id for _, _, session_id in rows}
    assert len(session_id) == 36
    stored = await page.evaluate("localStorage.getItem('hw_sid')")
    assert stored.startswith(session_id + ".")


async def test_a_new_session_id_after_the_inactivity_timeout(site: Site, browser: Browser) -> None:
    page = await site.open(browser, sessionTimeout=2000)
    await page.evaluate("headwater.track('First', {n: 1}); headwater.track('First', {n: 2})")
    await asyncio.sleep(3)
    await page.evaluate("headwater.track('Later')")
    by_event: dict[str, set[str]] = {}
    for _, event, session_id in await site.sessions(4):
        by_event.setdefault(event, set()).add(session_id)
    [first] = by_event["First"]
    [later] = by_event["Later"]
    assert first != later and len(later) == 36


async def test_no_session_id_when_turned_off(site: Site, browser: Browser) -> None:
    page = await site.open(browser, sessionId=False)
    await page.evaluate("headwater.track('Untracked session')")
    assert [session_id for _, _, session_id in await site.sessions(2)] == ["", ""]
    assert await page.evaluate("localStorage.getItem('hw_sid')") is None


async def test_events_sent_as_the_tab_closes_arrive(site: Site, browser: Browser) -> None:
    # Nothing would be sent for a minute: only closing the tab sends these.
    page = await site.open(browser, flushInterval=60_000)
    await page.evaluate("headwater.track('Closing', {n: 1}); headwater.track('Closing', {n: 2})")
    assert site.sent == []
    await page.close(run_before_unload=True)
    rows = await site.wait_for(3)
    assert sorted((row.type, row.event, row.properties.get("n")) for row in rows) == [
        ("page", "", None),
        ("track", "Closing", 1),
        ("track", "Closing", 2),
    ]


async def test_events_queued_offline_arrive_after_going_online(site: Site, browser: Browser) -> None:
    page = await site.open(browser)
    await site.wait_for(1)
    await page.context.set_offline(True)
    assert await page.evaluate("navigator.onLine") is False
    await page.evaluate("headwater.track('Offline', {n: 1}); headwater.track('Offline', {n: 2})")
    # Queued in localStorage, where they would survive a reload too.
    queued = await page.evaluate(f"JSON.parse(localStorage.getItem('hw_q_{site.key}')).map(e => e.event)")
    assert queued == ["Offline", "Offline"]
    assert len(await site.rows()) == 1
    await page.context.set_offline(False)
    rows = await site.wait_for(3)
    assert sorted(row.properties.get("n", 0) for row in rows if row.event == "Offline") == [1, 2]
    assert await page.evaluate(f"localStorage.getItem('hw_q_{site.key}')") == "[]"


async def test_events_queued_while_the_edge_is_down_arrive_after_it_returns(
    site: Site, browser: Browser, nats_server: NatsServerProcess, clickhouse_url: str
) -> None:
    """A second edge, stopped and started again on its port: the SDK (loaded from the first edge)
    sends to it, retries while it is down, keeps the events across a reload, and delivers them."""
    edges: list[Stack] = []

    async def start_edge(port: int) -> Stack:
        edge = Stack(
            StackSettings(
                nats_url=nats_server.url,
                streams=site.stack.settings.streams,
                clickhouse_url=clickhouse_url,
                edge=EdgeSettings(port=port),
            )
        )
        edges.append(edge)
        await edge.start()
        return edge

    try:
        edge = await start_edge(0)
        assert edge.edge_url is not None
        page = await site.open(browser, host=edge.edge_url)
        await site.wait_for(1)
        await edges.pop().stop()

        await page.evaluate("headwater.track('During outage', {n: 1})")
        await eventually(_count(site.failed), lambda n: n >= 2, timeout=30)  # retried, not given up
        await page.reload()  # the queue survives it; this page's view joins it
        await sdk_loaded(page)
        await page.evaluate("headwater.track('During outage', {n: 2})")
        assert len(await site.rows()) == 1

        await start_edge(int(edge.edge_url.rsplit(":", 1)[1]))
        rows = await site.wait_for(4)
        assert sorted((row.type, row.properties.get("n", 0)) for row in rows) == [
            ("page", 0),
            ("page", 0),
            ("track", 1),
            ("track", 2),
        ]
    finally:
        for edge in edges:
            await edge.stop()


async def test_a_page_on_a_disallowed_origin_stores_nothing(site: Site, browser: Browser) -> None:
    outsider = await site.open(browser, server=site.elsewhere)
    await outsider.evaluate("headwater.track('Not allowed')")

    async def refused() -> float:
        metrics = (await site.http.get(f"{site.stack.edge_operator_url}/metrics")).text
        found = re.search(
            r'^headwater_edge_requests_total\{endpoint="batch",status="403"\} (\S+)$', metrics, re.M
        )
        return float(found.group(1)) if found else 0

    await eventually(refused, lambda n: n >= 1, timeout=30)
    assert not site.answered  # the edge refused without CORS headers: the page cannot read the answer
    # An allowed page's events, sent after the refused ones, arrive alone.
    await site.open(browser)
    await site.wait_for(1)
    assert [(row.type, row.origin) for row in await site.rows()] == [("page", site.pages.origin)]


def _count(seen: list[Any], item: object = None) -> Callable[[], Awaitable[int]]:
    """A probe for `eventually`: how many entries of `seen` there are (equal to `item`, if given)."""

    async def probe() -> int:
        return len(seen) if item is None else seen.count(item)

    return probe
