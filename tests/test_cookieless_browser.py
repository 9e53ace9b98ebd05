"""The SDK with `persistence: 'none'` against a cookieless project, in headless Chromium: nothing
stored in the browser, yet one visitor across page loads and browser contexts, through the edge,
JetStream and a consumer into the embedded ClickHouse (docs/privacy.md#cookieless-visitors)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from hw_browser import PageServer
from hw_testing import StackFactory, create_project, eventually, query_rows
from playwright.async_api import Browser, Page

from headwater.edge.sdkfile import SDK_PATH

pytestmark = [pytest.mark.services, pytest.mark.slow]

SNIPPET = (Path(__file__).resolve().parents[1] / "sdk" / "js" / "snippet.html").read_text()
ROWS = "SELECT type, event, anonymous_id, ip FROM events FINAL ORDER BY received_at, timestamp"


async def open_page(browser: Browser, pages: PageServer, sdk_url: str, options: dict[str, object]) -> Page:
    snippet = SNIPPET.replace("https://EDGE/sdk/v1/headwater.js", sdk_url).replace(
        "{ key: 'PUBLIC_KEY' }", json.dumps(options)
    )
    pages.html = f"<!doctype html><html><head><title>Cookieless</title>{snippet}</head><body></body></html>"
    context = await browser.new_context()  # a fresh browser profile: nothing carried over
    page = await context.new_page()
    await page.goto(pages.origin + "/")
    await page.wait_for_function("window.headwater && !Array.isArray(window.headwater)")
    return page


async def test_persistence_none_is_one_visitor_across_page_loads(
    make_stack: StackFactory,
    http: httpx.AsyncClient,
    project_id: str,
    page_servers: tuple[PageServer, PageServer],
    browser: Browser,
) -> None:
    stack = await make_stack(edge=True, control=True, consumer=True)
    pages, _ = page_servers
    created = await create_project(
        http, stack, project_id, allowed_origins=[pages.origin], settings={"cookieless": {"mode": "always"}}
    )
    options = {
        "key": created["public_key"],
        "persistence": "none",
        "sessionId": False,
        "flushInterval": 200,
        "retryDelay": 200,
    }
    sdk_url = f"{stack.edge_url}{SDK_PATH}"
    page = await open_page(browser, pages, sdk_url, options)
    await page.evaluate("headwater.track('Before reload')")
    await page.reload()
    await page.wait_for_function("window.headwater && !Array.isArray(window.headwater)")
    await page.evaluate("headwater.track('After reload')")
    assert await page.evaluate("localStorage.length + document.cookie.length") == 0  # nothing stored
    other = await open_page(browser, pages, sdk_url, options)
    await other.evaluate("headwater.track('Another tab')")

    rows = await eventually(
        lambda: query_rows(http, stack, project_id, ROWS), lambda rows: len(rows) >= 5, timeout=30
    )
    assert sorted(event for kind, event, _, _ in rows if kind == "track") == [
        "After reload",
        "Another tab",
        "Before reload",
    ]
    [visitor] = {anonymous_id for _, _, anonymous_id, _ in rows}
    assert visitor.startswith("cl_")
    assert {ip for _, _, _, ip in rows} == {"127.0.0.0"}  # the page's address, as its /24
