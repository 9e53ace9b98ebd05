"""Jitsu's ingest API on the edge (docs/ingest-api.md#jitsu): the real `@jitsu/js`, bundled with
esbuild from tests/browserlibs/jitsu, in Debian's Chromium from an allowed and a disallowed origin;
and Jitsu's server-to-server paths, batch, one-letter types and arrival fills over HTTP. Events go
through the edge, JetStream and a consumer into the embedded ClickHouse."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from hw_browser import BROWSER_LIBRARIES, PageServer, bundle_library
from hw_testing import create_project, eventually, query_rows
from playwright.async_api import ConsoleMessage, Response, async_playwright

from headwater.edge.ingest import IngestRequest, extract_write_key
from headwater.ops.runtime import Stack

pytestmark = [pytest.mark.services]

COLUMNS = (
    "type, event, user_id, anonymous_id, group_id, page_path, page_title, page_host, utm_source,"
    " utm_campaign, browser, origin, ip, user_agent, message_id, properties, traits, context,"
    " timestamp = received_at"
)
KEYS = (
    *("type", "event", "user_id", "anonymous_id", "group_id", "page_path", "page_title", "page_host"),
    *("utm_source", "utm_campaign", "browser", "origin", "ip", "user_agent", "message_id"),
    *("properties", "traits", "context", "at_arrival"),
)
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


@pytest.fixture(scope="session")
def jitsu_bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    """@jitsu/js as one self-contained script defining window.jitsuAnalytics (entry.js)."""
    return bundle_library("jitsu", tmp_path_factory.mktemp("jitsu"))


@pytest.fixture(scope="session")
def jitsu_library(jitsu_bundle: str) -> Path:
    """tests/browserlibs/jitsu with its locked packages installed, for s2s.cjs in Node."""
    return BROWSER_LIBRARIES / "jitsu"


async def _rows(
    http: httpx.AsyncClient, stack: Stack, project_id: str, where: str = "1"
) -> list[dict[str, Any]]:
    sql = f"SELECT {COLUMNS} FROM events FINAL WHERE {where} ORDER BY timestamp, message_id"
    rows = await query_rows(http, stack, project_id, sql)
    return [dict(zip(KEYS, row, strict=True)) for row in rows]


async def _wait_rows(
    http: httpx.AsyncClient, stack: Stack, project_id: str, count: int, where: str = "1"
) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]]:
        return await _rows(http, stack, project_id, where)

    return await eventually(probe, lambda rows: len(rows) >= count, timeout=30)


def _page(bundle: str, edge: str, key: str) -> str:
    script = bundle.replace("</script", "<\\/script")
    # @jitsu/js refuses a key not in Jitsu's `id:secret` form: the headwater key, a colon, anything.
    init = json.dumps({"host": edge, "writeKey": f"{key}:hw"})
    return (
        "<!doctype html><html><head><title>Jitsu page</title>"
        f"<script>{script}</script><script>window.jitsu = jitsuAnalytics({init});</script>"
        "</head><body></body></html>"
    )


def _console_error(message: ConsoleMessage, errors: list[str]) -> None:
    if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
        errors.append(message.text)


async def _refused_preflights(http: httpx.AsyncClient, stack: Stack) -> float:
    metrics = (await http.get(f"{stack.edge_operator_url}/metrics")).text
    found = re.search(
        r'^headwater_edge_requests_total\{endpoint="track",status="403"\} (\S+)$', metrics, re.M
    )
    return float(found.group(1)) if found else 0


@pytest.mark.slow
async def test_jitsu_js_from_an_allowed_origin_lands_and_a_disallowed_one_stores_nothing(
    make_stack: Any,
    http: httpx.AsyncClient,
    project_id: str,
    jitsu_bundle: str,
    chromium: str,
) -> None:
    stack = await make_stack(edge=True, control=True, consumer=True)
    pages, elsewhere = PageServer(), PageServer()
    try:
        created = await create_project(http, stack, project_id, name="Jitsu", allowed_origins=[pages.origin])
        key = created["public_key"]
        pages.html = elsewhere.html = _page(jitsu_bundle, stack.edge_url, key)
        answers: list[tuple[str, str, int]] = []
        errors: list[str] = []  # what the library logged or threw on the allowed page

        def seen(response: Response) -> None:
            if "/api/s/" in response.url:
                answers.append((response.request.method, response.url.rsplit("/", 1)[1], response.status))

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium)
            try:
                page = await (await browser.new_context()).new_page()
                page.on("response", seen)
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.on("console", lambda m: _console_error(m, errors))
                await page.goto(pages.origin + "/docs/start?utm_source=news&utm_campaign=spring")
                await page.evaluate("jitsu.page()")
                await page.evaluate("jitsu.identify('user-42', {email: 'ada@example.com'})")
                await page.evaluate("jitsu.track('Signed Up', {plan: 'pro'})")
                await page.evaluate("jitsu.group('acme', {name: 'Acme'})")
                rows = await _wait_rows(http, stack, project_id, 4)
                assert errors == []
                assert sorted(status for method, _, status in answers if method == "POST") == [200] * 4

                outsider = await (await browser.new_context()).new_page()
                await outsider.goto(elsewhere.origin + "/")
                await outsider.evaluate("jitsu.track('Not allowed')")
                # The preflight was refused (403, no CORS headers): the POST was never sent.
                await eventually(lambda: _refused_preflights(http, stack), lambda n: n == 1)
                await page.evaluate("jitsu.track('After')")
                rows = await _wait_rows(http, stack, project_id, 5)
            finally:
                await browser.close()
    finally:
        pages.close()
        elsewhere.close()

    assert [(r["type"], r["event"]) for r in rows] == [
        ("page", ""),
        ("identify", ""),
        ("track", "Signed Up"),
        ("group", ""),
        ("track", "After"),
    ]
    anonymous = rows[0]["anonymous_id"]
    assert anonymous and all(r["anonymous_id"] == anonymous for r in rows)
    assert [r["user_id"] for r in rows] == ["", "user-42", "user-42", "user-42", "user-42"]
    assert rows[3]["group_id"] == "acme" and rows[4]["group_id"] == "acme"
    assert rows[1]["traits"] == json.dumps({"email": "ada@example.com"}, separators=(",", ":"))
    assert json.loads(rows[2]["properties"]) == {"plan": "pro"}
    host = "127.0.0.1"  # (page_host is without the port)
    for row in rows:
        assert row["origin"] == pages.origin
        assert (row["page_path"], row["page_title"], row["page_host"]) == ("/docs/start", "Jitsu page", host)
        assert (row["utm_source"], row["utm_campaign"]) == ("news", "spring")
        assert row["browser"].startswith(("Chrome", "Chromium", "HeadlessChrome"))
        context = json.loads(row["context"])
        assert context["library"]["name"] == "@jitsu/js"
        assert context["locale"] and context["screen"] and "clientIds" in context
        assert "ip" not in context  # a browser may not say where an event came from
        assert len(row["message_id"]) > 8


@pytest.fixture
async def jitsu_site(
    make_stack: Any, http: httpx.AsyncClient, project_id: str
) -> tuple[Stack, dict[str, Any]]:
    stack = await make_stack(edge=True, control=True, consumer=True)
    created = await create_project(
        http, stack, project_id, name="Jitsu", allowed_origins=["https://shop.example"]
    )
    return stack, created


async def test_jitsu_js_server_to_server_in_node(
    jitsu_site: tuple[Stack, dict[str, Any]], http: httpx.AsyncClient, project_id: str, jitsu_library: Path
) -> None:
    """@jitsu/js with `s2s: true` in Node (s2s.cjs) and a secret key: /api/s/s2s/{type}."""
    stack, created = jitsu_site
    assert stack.edge_url is not None
    node = await asyncio.create_subprocess_exec(
        "node",
        "s2s.cjs",
        stack.edge_url,
        f"{created['secret_key']}:hw",
        cwd=jitsu_library,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(node.communicate(), timeout=60)
    assert node.returncode == 0, (out, err)
    rows = await _wait_rows(http, stack, project_id, 2)
    assert [(r["type"], r["event"], r["user_id"], r["origin"]) for r in rows] == [
        ("identify", "", "srv-1", ""),
        ("track", "Invoice Paid", "srv-1", ""),
    ]
    assert json.loads(rows[1]["properties"]) == {"amount": 12}
    assert json.loads(rows[1]["context"])["library"]["env"] == "node"


def _jitsu_basic(key: str) -> dict[str, str]:
    """What Jitsu's server clients send: the whole write key, base64, as the Basic credentials."""
    return {"Authorization": "Basic " + base64.b64encode(key.encode()).decode()}


async def test_s2s_paths_take_a_secret_key_and_its_context_ip(
    jitsu_site: tuple[Stack, dict[str, Any]], http: httpx.AsyncClient, project_id: str
) -> None:
    stack, created = jitsu_site
    secret = created["secret_key"]
    event = {"event": "Paid", "userId": "u1", "messageId": "s2s-1", "context": {"ip": "203.0.113.9"}}
    answer = await http.post(f"{stack.edge_url}/api/s/s2s/track", json=event, headers=_jitsu_basic(secret))
    assert answer.status_code == 200, answer.text
    assert answer.json()["success"] is True and "destinations" not in answer.json()
    answer = await http.post(
        f"{stack.edge_url}/api/s/s2s/i",
        json={"userId": "u1", "traits": {"plan": "pro"}, "messageId": "s2s-2"},
        headers={"X-Write-Key": secret},
    )
    assert answer.status_code == 200, answer.text
    # Secret keys never from a browser, on Jitsu's paths as on Segment's.
    answer = await http.post(
        f"{stack.edge_url}/api/s/s2s/track",
        json=event,
        headers={"X-Write-Key": secret, "Origin": "https://shop.example"},
    )
    assert (answer.status_code, answer.json()["code"]) == (403, "secret_key_from_browser")
    rows = await _wait_rows(http, stack, project_id, 2)
    assert [(r["type"], r["event"], r["user_id"], r["message_id"]) for r in rows] == [
        ("track", "Paid", "u1", "s2s-1"),
        ("identify", "", "u1", "s2s-2"),
    ]
    assert rows[0]["ip"] == "203.0.113.0"  # the sender's context.ip, truncated by the project's rule


async def test_the_s2s_batch(
    jitsu_site: tuple[Stack, dict[str, Any]], http: httpx.AsyncClient, project_id: str
) -> None:
    stack, created = jitsu_site
    body = {
        "writeKey": created["secret_key"],
        "context": {"library": {"name": "jitsu-python"}},
        "batch": [
            {"type": "track", "event": "A", "userId": "u1", "messageId": "b-1"},
            {"type": "page", "userId": "u1", "messageId": "b-2", "context": {"page": {"path": "/x"}}},
            {"type": "track", "userId": "u1", "messageId": "b-3"},  # no event: rejected alone
        ],
    }
    answer = await http.post(f"{stack.edge_url}/api/s/s2s/batch", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 2 and answer.json()["rejected"][0]["index"] == 2
    # Its other batch paths, with the key in X-Write-Key.
    for path, message_id in (("/batch", "b-4"), ("/b", "b-5")):
        one = {"batch": [{"type": "track", "event": "B", "userId": "u1", "messageId": message_id}]}
        answer = await http.post(
            f"{stack.edge_url}{path}", json=one, headers={"X-Write-Key": created["secret_key"]}
        )
        assert answer.status_code == 200, answer.text
    rows = await _wait_rows(http, stack, project_id, 4)
    assert [(r["message_id"], r["type"], r["page_path"]) for r in rows] == [
        ("b-1", "track", ""),
        ("b-2", "page", "/x"),
        ("b-4", "track", ""),
        ("b-5", "track", ""),
    ]
    assert json.loads(rows[0]["context"]) == {"library": {"name": "jitsu-python"}}


async def test_one_letter_and_long_types_give_identical_rows(
    jitsu_site: tuple[Stack, dict[str, Any]], http: httpx.AsyncClient, project_id: str
) -> None:
    stack, created = jitsu_site
    headers = {"X-Write-Key": created["public_key"], "Origin": "https://shop.example", "User-Agent": UA}
    context = {"page": {"url": "https://shop.example/cart?utm_source=ad", "title": "Cart"}, "locale": "fr-FR"}
    sent: dict[str, dict[str, Any]] = {
        "p": {"properties": {"path": "/cart"}},
        "t": {"event": "Added", "properties": {"sku": "x"}},
        "i": {"traits": {"plan": "pro"}},
        "g": {"groupId": "acme"},
        "a": {"previousId": "anon-1"},
        "s": {"name": "Home"},
    }
    long_names = {"p": "page", "t": "track", "i": "identify", "g": "group", "a": "alias", "s": "screen"}
    stamp = "2026-01-02T03:04:05.000Z"
    for letter, fields in sent.items():
        for path, form in ((letter, "short"), (long_names[letter], "long")):
            event = {
                **fields,
                "userId": "u1",
                "context": context,
                "timestamp": stamp,
                "messageId": f"{form}-{letter}",
            }
            answer = await http.post(f"{stack.edge_url}/api/s/{path}", json=event, headers=headers)
            assert answer.status_code == 200, (path, answer.text)
            assert answer.headers["access-control-allow-origin"] == "https://shop.example"
    rows = await _wait_rows(http, stack, project_id, 12)
    ignored = ("message_id",)
    short = {
        r["message_id"][6:]: {k: v for k, v in r.items() if k not in ignored}
        for r in rows
        if r["message_id"].startswith("short-")
    }
    long = {
        r["message_id"][5:]: {k: v for k, v in r.items() if k not in ignored}
        for r in rows
        if r["message_id"].startswith("long-")
    }
    assert short == long and len(short) == 6
    assert {r["type"] for r in short.values()} == set(long_names.values())
    assert short["p"]["page_path"] == "/cart" and short["t"]["utm_source"] == "ad"
    assert short["t"]["browser"] == "Chrome" and short["t"]["page_host"] == "shop.example"


async def test_arrival_fills_and_the_type_from_the_body(
    jitsu_site: tuple[Stack, dict[str, Any]], http: httpx.AsyncClient, project_id: str
) -> None:
    """No messageId, timestamp or user agent in the event: the edge's message id, the arrival
    time, the request's address and User-Agent, as Jitsu's server fills them."""
    stack, created = jitsu_site
    headers = {"X-Write-Key": created["secret_key"], "User-Agent": UA}
    answer = await http.post(
        f"{stack.edge_url}/api/s/e", json={"type": "track", "event": "E", "userId": "u9"}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    answer = await http.post(
        f"{stack.edge_url}/api/s/s2s/e", json={"event": "E", "userId": "u9"}, headers=headers
    )
    assert (answer.status_code, answer.json()["code"], answer.json()["field"]) == (
        400,
        "invalid_type",
        "type",
    )
    answer = await http.post(f"{stack.edge_url}/api/s/purchase", json={"userId": "u9"}, headers=headers)
    assert answer.status_code == 404
    [row] = await _wait_rows(http, stack, project_id, 1)
    assert (row["type"], row["event"], row["at_arrival"]) == ("track", "E", True)
    assert len(row["message_id"]) >= 16
    assert row["ip"] == "127.0.0.0" and row["user_agent"] == UA and row["browser"] == "Chrome"


async def test_the_preflight_allows_what_jitsu_js_sends(
    jitsu_site: tuple[Stack, dict[str, Any]], http: httpx.AsyncClient
) -> None:
    stack, _ = jitsu_site
    asked = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    for path in ("/api/s/page", "/api/s/t", "/api/s/s2s/batch"):
        answer = await http.options(f"{stack.edge_url}{path}", headers=asked)
        assert answer.status_code == 204, path
        assert answer.headers["access-control-allow-origin"] == "https://shop.example"
        allowed = set(re.split(r",\s*", answer.headers["access-control-allow-headers"]))
        assert {"content-type", "x-write-key", "x-enable-debug", "x-ip-policy"} <= allowed
    refused = await http.options(
        f"{stack.edge_url}/api/s/page", headers={**asked, "Origin": "https://evil.example"}
    )
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers


def test_a_key_in_jitsus_id_secret_form_is_read_before_its_colon() -> None:
    """@jitsu/js refuses a key without a `:`; each of the three places reads `<key>:<anything>`."""
    for request, body_key in (
        (IngestRequest(kind="track", body=b"", write_key_header=" hwpk_a:hw "), None),
        (IngestRequest(kind="track", body=b""), "hwpk_a:***"),  # as @jitsu/js masks it in the body
        (
            IngestRequest(kind="track", body=b"", authorization=_jitsu_basic("hwpk_a:hw")["Authorization"]),
            None,
        ),
        (IngestRequest(kind="track", body=b"", write_key_header="hwpk_a"), None),
    ):
        assert extract_write_key(request, body_key) == "hwpk_a"
