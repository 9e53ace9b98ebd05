"""Segment's analytics.js 2.0 (npm `@segment/analytics-next`, the version locked in
tests/browserlibs/segment/) in Debian's Chromium, pointed at the edge the way docs/ingest-api.md
says: `AnalyticsBrowser.load({writeKey, cdnURL: <edge>})` and nothing else. The library loads its
settings from the edge, sends each call to `/v1/<letter>` (or `/v1/b` when batching), and every event
must land as a row through JetStream, a consumer and the embedded ClickHouse."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hw_browser import PageServer, bundle_library
from hw_testing import create_project, eventually, query_rows
from playwright.async_api import Browser, Page, Request, Response

from headwater.consumers.enrich.useragent import parse_user_agent
from headwater.edge.settings import EdgeSettings
from headwater.ops.runtime import Stack

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROWS = (
    "SELECT type, event, user_id, anonymous_id, group_id, previous_id, page_path, properties, traits,"
    " context, browser, browser_version, os, origin, request_id"
    " FROM events FINAL ORDER BY timestamp, received_at"
)
CALLS = """async () => {
    await analytics.page('Docs', 'Pricing', {plan: 'pro'});
    await analytics.identify('user-42', {email: 'ada@example.com'});
    await analytics.track('Signed Up', {seats: 3});
    await analytics.group('org-7', {name: 'Acme'});
    await analytics.alias('user-43', 'user-42');
    return navigator.userAgent;
}"""


@dataclass
class Row:
    type: str
    event: str
    user_id: str
    anonymous_id: str
    group_id: str
    previous_id: str
    page_path: str
    properties: dict[str, Any]
    traits: dict[str, Any]
    context: dict[str, Any]
    browser: str
    browser_version: str
    os: str
    origin: str
    request_id: str


@pytest.fixture(scope="session")
def segment_bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    """analytics-next at the locked version, its dynamic imports inlined into the one script."""
    bundle = bundle_library(
        "segment", tmp_path_factory.mktemp("segment"), "--platform=browser", "--target=es2020"
    )
    assert "</script" not in bundle  # inlined into the test page as it is
    return bundle


@dataclass
class Site:
    """A project whose allowed origin is `pages`; `elsewhere` is an origin it does not allow."""

    stack: Stack
    http: httpx.AsyncClient
    project_id: str
    key: str
    pages: PageServer
    elsewhere: PageServer
    bundle: str
    requests: list[str] = field(default_factory=list)  # every URL the pages asked for
    answers: list[tuple[str, int]] = field(default_factory=list)  # edge path, status
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # posted to the edge: path, body

    @property
    def edge(self) -> str:
        assert self.stack.edge_url is not None
        return self.stack.edge_url

    async def open(
        self,
        browser: Browser,
        settings: dict[str, Any],
        options: dict[str, Any],
        server: PageServer | None = None,
    ) -> Page:
        """A page of `server` at /pricing that loads the library with these load settings and options."""
        server = server or self.pages
        server.html = (
            "<!doctype html><html><head><title>Pricing</title>"
            f"<script>{self.bundle}</script><script>"
            f"window.analytics = AnalyticsBrowser.load({json.dumps(settings)}, {json.dumps(options)});"
            "</script></head><body></body></html>"
        )
        context = await browser.new_context()
        page = await context.new_page()
        page.on("request", self._request)
        page.on("response", self._response)
        await page.goto(server.origin + "/pricing?plan=pro")
        return page

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)
        if request.url.startswith(self.edge) and request.method == "POST" and request.post_data:
            self.sent.append((request.url.removeprefix(self.edge), json.loads(request.post_data)))

    def _response(self, response: Response) -> None:
        if response.url.startswith(self.edge):
            self.answers.append((response.url.removeprefix(self.edge), response.status))

    async def rows(self) -> list[Row]:
        rows = await query_rows(self.http, self.stack, self.project_id, ROWS)
        return [
            Row(*row[:7], *(json.loads(value) for value in row[7:10]), *row[10:])  # type: ignore[arg-type]
            for row in rows
        ]

    async def wait_for(self, count: int) -> list[Row]:
        return await eventually(self.rows, lambda rows: len(rows) >= count, timeout=30)

    async def edge_requests(self, endpoint: str, status: int) -> float:
        """headwater_edge_requests_total for `endpoint` answered `status`."""
        metrics = (await self.http.get(f"{self.stack.edge_operator_url}/metrics")).text
        found = re.search(
            rf'^headwater_edge_requests_total\{{endpoint="{endpoint}",status="{status}"\}} (\S+)$',
            metrics,
            re.M,
        )
        return float(found.group(1)) if found else 0.0


@pytest.fixture
async def site(
    make_stack: Any,
    http: httpx.AsyncClient,
    project_id: str,
    page_servers: tuple[PageServer, PageServer],
    segment_bundle: str,
) -> Site:
    # The edge's operator listener lets the tests read which endpoints answered what.
    stack = await make_stack(edge=EdgeSettings(port=0), control=True, consumer=True)
    pages, elsewhere = page_servers
    created = await create_project(http, stack, project_id, name="Segment", allowed_origins=[pages.origin])
    return Site(stack, http, project_id, created["public_key"], pages, elsewhere, segment_bundle)


def only_headwater(site: Site) -> None:
    """Nothing went anywhere but the page's own server and the edge (no Segment CDN, API or metrics)."""
    ours = (site.pages.origin, site.elsewhere.origin, site.edge)
    assert [url for url in site.requests if not url.startswith(ours)] == []


async def test_every_call_lands_as_a_row_with_the_default_settings(site: Site, browser: Browser) -> None:
    page = await site.open(browser, {"writeKey": site.key, "cdnURL": site.edge}, {})
    user_agent = await page.evaluate(CALLS)
    rows = await site.wait_for(5)
    assert [(r.type, r.event, r.user_id, r.group_id, r.previous_id) for r in rows] == [
        ("page", "Pricing", "", "", ""),
        ("identify", "", "user-42", "", ""),
        ("track", "Signed Up", "user-42", "", ""),
        ("group", "", "user-42", "org-7", ""),
        # analytics-next sends the current user as an alias's userId (its addIdentity), whatever `to` was.
        ("alias", "", "user-42", "", "user-42"),
    ]
    # Each row holds the ids the library sent, and no request carried a field the edge refused.
    sent = {body["type"]: body for _, body in site.sent}
    for row in rows:
        body = sent[row.type]
        assert (row.user_id, row.anonymous_id) == (body.get("userId") or "", body["anonymousId"])
        assert body["writeKey"] == site.key and "_metadata" in body
    assert len({r.anonymous_id for r in rows}) == 1 and len(rows[0].anonymous_id) == 36
    assert len({r.request_id for r in rows}) == 5  # one request per call
    expected = parse_user_agent(user_agent)
    for row in rows:
        assert (row.page_path, row.origin) == ("/pricing", site.pages.origin)
        assert (row.browser, row.browser_version) == (expected.browser, expected.browser_version)
        assert row.browser and row.os == "Linux"
        assert row.context["library"]["name"] == "analytics.js"
        assert row.context["userAgent"] == user_agent
        assert row.context["locale"]
        assert row.context["page"]["search"] == "?plan=pro"
    assert rows[0].properties["plan"] == "pro" and rows[0].properties["category"] == "Docs"
    assert rows[1].traits == {"email": "ada@example.com"}
    assert rows[2].properties == {"seats": 3}
    assert rows[3].traits == {"name": "Acme"}
    # The settings came from the edge; each call went to its one-letter path, once.
    paths = sorted(path.split("?")[0] for path, status in site.answers if status == 200)
    assert paths == sorted([f"/v1/projects/{site.key}/settings", "/v1/p", "/v1/i", "/v1/t", "/v1/g", "/v1/a"])
    only_headwater(site)


async def test_the_batching_strategy_delivers_through_v1_b(site: Site, browser: Browser) -> None:
    """Three events fill a batch and go at once; a fourth waits (a minute) until the tab closes, and
    then goes in a keepalive request, which the edge's preflight must allow as well."""
    batching = {"strategy": "batching", "config": {"size": 3, "timeout": 60_000}}
    page = await site.open(
        browser,
        {"writeKey": site.key, "cdnURL": site.edge},
        {"integrations": {"Segment.io": {"deliveryStrategy": batching}}},
    )
    await page.evaluate("() => { analytics.page(); analytics.track('One'); analytics.track('Two') }")
    full = await site.wait_for(3)
    assert len({row.request_id for row in full}) == 1  # one request of three events
    [(path, body)] = site.sent
    assert (path, len(body["batch"]), body["writeKey"]) == ("/v1/b", 3, site.key)
    await page.evaluate("() => analytics.track('Three').then(() => true)")  # buffered
    assert len(site.sent) == 1
    await page.close(run_before_unload=True)
    rows = await site.wait_for(4)
    assert sorted((r.type, r.event) for r in rows) == [
        ("page", ""),
        ("track", "One"),
        ("track", "Three"),
        ("track", "Two"),
    ]
    # (A closed page's requests are not reported to Playwright: the rows tell what arrived.)
    assert len({row.request_id for row in rows}) == 2
    only_headwater(site)


async def test_a_disallowed_origin_stores_nothing(site: Site, browser: Browser) -> None:
    # Its settings are refused, so the library never starts...
    await site.open(browser, {"writeKey": site.key, "cdnURL": site.edge}, {}, server=site.elsewhere)
    await eventually(lambda: site.edge_requests("settings", 403), lambda n: n >= 1, timeout=30)
    # ...and given its settings inline, its events are refused.
    settings = (
        await site.http.get(
            f"{site.edge}/v1/projects/{site.key}/settings", headers={"Origin": site.pages.origin}
        )
    ).json()
    page = await site.open(
        browser, {"writeKey": site.key, "cdnSettings": settings}, {}, server=site.elsewhere
    )
    await page.evaluate("() => { analytics.track('Not allowed') }")
    await eventually(lambda: site.edge_requests("track", 403), lambda n: n >= 1, timeout=30)
    # An allowed page's event, sent after the refused ones, arrives alone.
    allowed = await site.open(browser, {"writeKey": site.key, "cdnURL": site.edge}, {})
    await allowed.evaluate("() => analytics.track('Allowed')")
    await site.wait_for(1)
    rows = await site.rows()
    assert [(r.type, r.event, r.origin) for r in rows] == [("track", "Allowed", site.pages.origin)]
