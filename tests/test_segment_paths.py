"""The forms analytics.js 2.0 (@segment/analytics-next) uses, through the edge's real port with NATS,
a consumer and the embedded ClickHouse behind it: the one-letter paths give the rows the long ones
give, with the same answers, CORS and preflight; and the CDN settings route it loads first.
tests/test_segment_browser.py drives the library itself in Chromium."""

# `dead_port` is a fixture of test_deploy_files; pytest matches it to the parameter by name.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from hw_testing import admin_headers, basic_auth, create_project, eventually, query_rows
from test_deploy_files import HAProxy, dead_port, haproxy_pem, host_port, local_haproxy_config  # noqa: F401

from headwater.edge.asgi import SEGMENT_SHORT_PATHS
from headwater.edge.cdnsettings import PublicBase, settings_key
from headwater.edge.settings import EdgeSettings
from headwater.ops.ports import free_ports
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services
ORIGIN = "https://shop.example.com"
ELSEWHERE = "https://evil.example.net"
# Every column but those that differ between two requests by nature.
COLUMNS = (
    "type, event, anonymous_id, user_id, group_id, previous_id, sent_at, ip, user_agent, origin,"
    " properties, traits, context, browser, browser_version, os, os_version, device_type, page_url,"
    " page_path, page_title, referrer, utm_source, utm_campaign"
)
CONTEXT = {
    "library": {"name": "analytics.js", "version": "npm:next-1.84.3"},
    "page": {
        "path": "/pricing",
        "url": "https://shop.example.com/pricing?utm_source=news&utm_campaign=spring",
        "title": "Pricing",
        "referrer": "https://search.example.org/",
        "search": "?utm_source=news&utm_campaign=spring",
    },
    "userAgent": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
    ),
    "locale": "en-GB",
    "campaign": {"source": "news", "name": "spring"},
}
# Each type as analytics-next sends it (its normalize(): writeKey, _metadata, integrations, sentAt).
CALLS: dict[str, dict[str, Any]] = {
    "track": {"event": "Signed Up", "properties": {"seats": 3}},
    "page": {"name": "Pricing", "category": "Docs", "properties": {"plan": "pro"}},
    "screen": {"name": "Home"},
    "identify": {"userId": "user-42", "traits": {"email": "ada@example.com"}},
    "group": {"groupId": "org-7", "traits": {"name": "Acme"}},
    "alias": {"userId": "user-43", "previousId": "user-42"},
}


def library_event(kind: str, key: str, message_id: str) -> dict[str, Any]:
    return {
        "type": kind,
        "anonymousId": "3b1a9f5e-8d4c-4c1e-9a57-0f3b2c6d7e81",
        "userId": None,
        "timestamp": "2026-03-01T10:00:00.000Z",
        "context": CONTEXT,
        "integrations": {},
        "messageId": message_id,
        "writeKey": key,
        "sentAt": "2026-03-01T10:00:00.250Z",
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
        **CALLS.get(kind, {}),
    }


def library_headers(key: str, origin: str = ORIGIN) -> dict[str, str]:
    """What analytics-next's fetch sends: text/plain (its default), Basic auth, the page's origin."""
    return {**basic_auth(key), "Content-Type": "text/plain", "Origin": origin, "User-Agent": "test/1"}


@pytest.fixture
async def stack(make_stack: Any) -> Stack:
    stack: Stack = await make_stack(edge=EdgeSettings(port=0), control=True, consumer=True)
    return stack


@pytest.fixture
async def keys(stack: Stack, http: httpx.AsyncClient, project_id: str) -> dict[str, str]:
    created = await create_project(http, stack, project_id, allowed_origins=[ORIGIN])
    return {"public": created["public_key"], "secret": created["secret_key"]}


def test_the_short_paths_are_the_first_letters() -> None:
    assert SEGMENT_SHORT_PATHS == {
        "/v1/t": "track",
        "/v1/p": "page",
        "/v1/s": "screen",
        "/v1/i": "identify",
        "/v1/g": "group",
        "/v1/a": "alias",
        "/v1/b": "batch",
    }


async def test_one_letter_and_long_paths_give_identical_rows(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], project_id: str
) -> None:
    key = keys["public"]
    for kind in CALLS:
        for path, prefix in ((kind[0], "short"), (kind, "long")):
            body = json.dumps(library_event(kind, key, f"{prefix}-{kind}"))
            response = await http.post(
                f"{stack.edge_url}/v1/{path}", content=body, headers=library_headers(key)
            )
            assert response.status_code == 200, response.text
            assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    for path, prefix in (("b", "short"), ("batch", "long")):
        batch = [library_event(k, key, f"{prefix}-batch-{k}") for k in ("track", "page")]
        for event in batch:  # the batching strategy moves sentAt to the batch
            del event["sentAt"], event["writeKey"]
        body = json.dumps({"writeKey": key, "batch": batch, "sentAt": "2026-03-01T10:00:00.250Z"})
        response = await http.post(f"{stack.edge_url}/v1/{path}", content=body, headers=library_headers(key))
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 2

    async def rows() -> dict[str, list[Any]]:
        found = await query_rows(http, stack, project_id, f"SELECT message_id, {COLUMNS} FROM events FINAL")
        return {row[0]: row[1:] for row in found}

    stored = await eventually(rows, lambda found: len(found) == 16, timeout=30)
    for name in [*CALLS, "batch-track", "batch-page"]:
        assert stored[f"short-{name}"] == stored[f"long-{name}"], name
    track = dict(zip(COLUMNS.split(", "), stored["short-track"], strict=True))
    assert (track["type"], track["event"], track["page_path"], track["browser"], track["os"]) == (
        "track",
        "Signed Up",
        "/pricing",
        "Chrome",
        "Linux",
    )
    assert (track["utm_source"], track["utm_campaign"], track["origin"]) == ("news", "spring", ORIGIN)
    assert json.loads(track["context"])["locale"] == "en-GB"
    assert stored["short-page"][1] == "Pricing" and stored["short-group"][4] == "org-7"


async def test_one_letter_paths_refuse_and_answer_as_the_long_ones(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    key = keys["public"]
    invalid = json.dumps({"anonymousId": "a1", "writeKey": key})  # a track without its event
    answers = []
    for path in ("t", "track"):
        response = await http.post(
            f"{stack.edge_url}/v1/{path}", content=invalid, headers=library_headers(key)
        )
        answers.append((response.status_code, response.json()["code"], response.json()["field"]))
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        refused = await http.post(
            f"{stack.edge_url}/v1/{path}",
            content=json.dumps(library_event("track", key, "m")),
            headers=library_headers(key, ELSEWHERE),
        )
        answers.append((refused.status_code, refused.json()["code"], None))
        assert "Access-Control-Allow-Origin" not in refused.headers
        wrong = await http.get(f"{stack.edge_url}/v1/{path}")
        answers.append((wrong.status_code, wrong.json()["code"], None))
    assert (
        answers[:3]
        == answers[3:]
        == [
            (400, "missing_field", "event"),
            (403, "origin_not_allowed", None),
            (405, "method_not_allowed", None),
        ]
    )


async def test_the_preflight_allows_what_analytics_next_sends(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    for path in ("t", "b"):
        # Basic auth always; X-Retry-Count when it retries.
        asked = {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,x-retry-count",
        }
        response = await http.options(f"{stack.edge_url}/v1/{path}", headers=asked)
        assert response.status_code == 204
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        allowed = {h.strip() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "x-retry-count", "content-type"} <= allowed
        refused = await http.options(f"{stack.edge_url}/v1/{path}", headers={**asked, "Origin": ELSEWHERE})
        assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers


# -- the settings route ----------------------------------------------------------------------------


async def test_settings_point_the_library_back_at_the_edge(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    key = keys["public"]
    response = await http.get(f"{stack.edge_url}/v1/projects/{key}/settings", headers={"Origin": ORIGIN})
    assert response.status_code == 200, response.text
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Cache-Control"] == "private, max-age=60"
    settings = response.json()
    host = stack.edge_url.removeprefix("http://") if stack.edge_url else ""
    assert settings["integrations"] == {
        "Segment.io": {
            "apiKey": key,
            "apiHost": f"{host}/v1",
            "protocol": "http",
            "addBundledMetadata": True,
            "unbundledIntegrations": [],
            "maybeBundledConfigIds": {},
        }
    }
    assert settings["metrics"] == {"sampleRate": 0, "host": f"{host}/v1"}
    assert settings["remotePlugins"] == [] and settings["enabledMiddleware"] == {}
    head = await http.head(f"{stack.edge_url}/v1/projects/{key}/settings", headers={"Origin": ORIGIN})
    assert head.status_code == 200 and head.content == b""


async def test_settings_only_for_a_public_key_from_an_allowed_origin(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], project_id: str
) -> None:
    url = f"{stack.edge_url}/v1/projects/{{}}/settings"
    cases = [
        (keys["public"], {"Origin": ELSEWHERE}, 403, "origin_not_allowed"),
        (keys["public"], {}, 403, "origin_not_allowed"),
        (keys["secret"], {"Origin": ORIGIN}, 403, "secret_key_from_browser"),
        (keys["secret"], {}, 403, "secret_key_from_browser"),
        ("hwpk_" + "x" * 30, {"Origin": ORIGIN}, 404, "unknown_key"),
        ("not%20a%20key", {"Origin": ORIGIN}, 404, "unknown_key"),
    ]
    for key, headers, status, code in cases:
        response = await http.get(url.format(key), headers=headers)
        assert (response.status_code, response.json()["code"]) == (status, code), key
        assert "Access-Control-Allow-Origin" not in response.headers
    posted = await http.post(url.format(keys["public"]), headers={"Origin": ORIGIN})
    assert (posted.status_code, posted.headers["Allow"]) == (405, "GET, HEAD")
    disabled = await http.patch(
        f"{stack.control_url}/v1/projects/{project_id}", json={"enabled": False}, headers=admin_headers()
    )
    assert disabled.status_code == 200

    async def answer() -> httpx.Response:
        return await http.get(url.format(keys["public"]), headers={"Origin": ORIGIN})

    refused = await eventually(answer, lambda r: r.status_code == 403)
    assert refused.json()["code"] == "project_disabled"


async def test_settings_name_the_proxy_in_front_only_when_it_is_trusted(
    stack: Stack, make_stack: Any, http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    proxied = await make_stack(edge=EdgeSettings(port=0, trusted_proxies=("127.0.0.1/32",)))
    forwarded = {"Origin": ORIGIN, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "collect.example.com"}
    path = f"/v1/projects/{keys['public']}/settings"

    async def segment_io(edge: Stack) -> dict[str, Any]:
        response = await http.get(f"{edge.edge_url}{path}", headers=forwarded)
        assert response.status_code == 200, response.text
        return dict(response.json()["integrations"]["Segment.io"])

    behind = await segment_io(proxied)
    assert (behind["protocol"], behind["apiHost"]) == ("https", "collect.example.com/v1")
    direct = await segment_io(stack)  # the first edge trusts no proxy: its own scheme and Host
    assert (direct["protocol"], direct["apiHost"]) == ("http", f"{stack.edge_url}/v1".removeprefix("http://"))


def test_settings_paths_and_public_bases() -> None:
    assert settings_key("/v1/projects/hwpk_abc/settings") == "hwpk_abc"
    assert settings_key("/v1/projects/a/b/settings") == ""  # under the route, but no key
    assert settings_key("/v1/projects/p1/query") is None
    assert PublicBase.of_request("https", "edge.example.com", None) == PublicBase("https", "edge.example.com")
    assert PublicBase.of_request("http", "[::1]:8700", None) == PublicBase("http", "[::1]:8700")
    # A Host that is no host name falls back to the address the request reached.
    assert PublicBase.of_request("http", "a b/c", ("10.0.0.5", 8700)) == PublicBase("http", "10.0.0.5:8700")
    assert PublicBase.of_request("http", None, None, "gopher", "x.example.com") == PublicBase(
        "http", "x.example.com"
    )


async def test_unknown_keys_on_the_settings_route_count_as_wrong_keys_on_ingest_too(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    """The settings route would otherwise be a free oracle for guessing keys."""
    statuses = [
        (
            await http.get(f"{stack.edge_url}/v1/projects/hwpk_guess{n}/settings", headers={"Origin": ORIGIN})
        ).status_code
        for n in range(21)
    ]
    assert statuses == [404] * 20 + [429]
    event = json.dumps(library_event("track", keys["public"], "after-guesses"))
    slowed = await http.post(f"{stack.edge_url}/v1/t", content=event, headers=library_headers(keys["public"]))
    assert (slowed.status_code, slowed.json()["code"]) == (429, "too_many_auth_failures")
    assert int(slowed.headers["Retry-After"]) >= 1


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
async def test_behind_the_shipped_haproxy_config_the_settings_name_its_https_url(
    make_stack: Any, http: httpx.AsyncClient, project_id: str, tmp_path: Path, dead_port: int
) -> None:
    """ops/deploy/haproxy.cfg passes the short paths and the settings route, and tells the edge
    (which trusts it) that the client came over TLS: the library is sent back to the balancer."""
    backend: Stack = await make_stack(control=True, consumer=True)
    edge: Stack = await make_stack(edge=EdgeSettings(port=0, trusted_proxies=("127.0.0.1/32",)))
    key = (await create_project(http, backend, project_id, allowed_origins=[ORIGIN]))["public_key"]
    registry = edge.registry
    assert registry is not None

    async def known() -> bool:
        return registry.get(project_id) is not None

    await eventually(known, bool, timeout=10)
    ingest_port, control_port = free_ports(2)
    down = f"127.0.0.1:{dead_port}"
    cert = haproxy_pem(tmp_path)
    config, admin = tmp_path / "haproxy.cfg", tmp_path / "admin.sock"
    config.write_text(
        local_haproxy_config(
            [host_port(edge.edge_url), down, down],
            [host_port(backend.control_url), down],
            ingest_port,
            control_port,
            cert,
            admin,
        )
    )
    haproxy = HAProxy(config, admin)
    balancer = f"https://127.0.0.1:{ingest_port}"
    try:
        await eventually(
            lambda: asyncio.to_thread(haproxy.status),
            lambda status: status.get("edges/edge-1", "").startswith("UP"),
            timeout=30,
            interval=0.5,
        )
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert))) as tls:
            settings = await tls.get(f"{balancer}/v1/projects/{key}/settings", headers={"Origin": ORIGIN})
            assert settings.status_code == 200, settings.text
            segment_io = settings.json()["integrations"]["Segment.io"]
            assert (segment_io["protocol"], segment_io["apiHost"]) == ("https", f"127.0.0.1:{ingest_port}/v1")
            event = json.dumps(library_event("track", key, "through-haproxy"))
            for path in ("t", "b"):
                body = event if path == "t" else json.dumps({"writeKey": key, "batch": [json.loads(event)]})
                sent = await tls.post(f"{balancer}/v1/{path}", content=body, headers=library_headers(key))
                assert sent.status_code == 200, sent.text
            # The route is open for settings only, not for the rest of /v1/projects.
            other = await tls.get(f"{balancer}/v1/projects/{key}/query", headers={"Origin": ORIGIN})
            assert other.status_code == 404 and "headwater" not in other.text
    finally:
        haproxy.stop()
