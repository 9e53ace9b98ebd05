"""The edge's Segment-compatible ingest API through its real HTTP port, with real NATS behind it."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hw_testing import ONE_EVENT_PER_IP_PER_SECOND, basic_auth, eventually, track_event, track_from
from hw_testing import create_project as create_any_project

from headwater.consumers.enrich import Enricher
from headwater.consumers.rows import COLUMNS, envelope_rows
from headwater.consumers.wire import decode_envelope
from headwater.core.wire.envelope import Envelope
from headwater.core.wire.subjects import EVENTS_STREAM, events_subject
from headwater.edge.settings import EdgeSettings
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services
ORIGIN = "https://shop.example.com"
LIMITS = EdgeSettings(
    port=0,
    max_body_bytes=8192,
    max_event_bytes=2048,
    max_batch_events=5,
    max_nesting_depth=6,
    publish_timeout_seconds=1,
    trusted_proxies=("127.0.0.1/32", "10.0.0.0/8"),
)


@pytest.fixture
async def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    return await make_stack(edge=LIMITS, control=True)


async def create_project(
    http: httpx.AsyncClient, stack: Stack, project_id: str, **extra: Any
) -> dict[str, str]:
    created = await create_any_project(
        http, stack, project_id, allowed_origins=[ORIGIN, "https://*.example.org"], **extra
    )
    return {"public": created["public_key"], "secret": created["secret_key"]}


@pytest.fixture
async def keys(stack: Stack, http: httpx.AsyncClient, project_id: str) -> dict[str, str]:
    return await create_project(http, stack, project_id)


async def post(
    http: httpx.AsyncClient, stack: Stack, path: str, body: bytes | dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    url = f"{stack.edge_url}/v1/{path}"
    if isinstance(body, dict):
        return await http.post(url, json=body, headers=headers)
    return await http.post(url, content=body, headers=headers)


async def stored_count(stack: Stack, project_id: str) -> int:
    assert stack.nats is not None
    subject = events_subject(project_id)
    info = await stack.nats.jetstream().stream_info(EVENTS_STREAM, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def stored_envelopes(stack: Stack, project_id: str) -> list[Envelope]:
    return [Envelope.decode(data) for data in await stored_messages(stack, project_id)]


async def stored_messages(stack: Stack, project_id: str) -> list[bytes]:
    if await stored_count(stack, project_id) == 0:
        return []
    assert stack.nats is not None
    js = stack.nats.jetstream()
    subscription = await js.pull_subscribe(events_subject(project_id), stream=EVENTS_STREAM)
    try:
        messages = await subscription.fetch(100, timeout=1)
    finally:
        await subscription.unsubscribe()
    return [m.data for m in messages]


def browser(keys: dict[str, str], origin: str = ORIGIN) -> dict[str, str]:
    return {**basic_auth(keys["public"]), "Origin": origin}


# -- acceptance ------------------------------------------------------------------------------------

EXAMPLES: dict[str, dict[str, Any]] = {
    "track": {"event": "Order Completed", "userId": "u1", "properties": {"total": 9.5}},
    "page": {"name": "Pricing", "anonymousId": "a1", "properties": {"path": "/pricing"}},
    "screen": {"name": "Home", "userId": "u1"},
    "identify": {"userId": "u1", "traits": {"plan": "pro"}},
    "group": {"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}},
    "alias": {"userId": "u1", "previousId": "a1"},
}


@pytest.mark.parametrize("kind", list(EXAMPLES))
async def test_every_segment_call_is_stored_before_the_2xx(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], project_id: str, kind: str
) -> None:
    response = await post(http, stack, kind, EXAMPLES[kind], browser(keys) | {"User-Agent": "agent/1"})
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    # a browser script may read these (the SDK honours Retry-After on 429/503)
    assert response.headers["Access-Control-Expose-Headers"] == "Retry-After, X-Request-Id"
    [envelope] = await stored_envelopes(stack, project_id)  # stored when the 2xx was sent
    assert envelope.request_id == response.json()["request_id"]
    assert (envelope.project, envelope.origin, envelope.user_agent, envelope.key_kind) == (
        project_id,
        ORIGIN,
        "agent/1",
        "public",
    )
    [event] = envelope.events
    assert event["type"] == kind
    assert event["messageId"]
    for field, value in EXAMPLES[kind].items():
        assert event[field] == value


@pytest.mark.parametrize("key_form", ["basic", "header", "body"])
async def test_every_write_key_form_is_accepted(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], key_form: str
) -> None:
    body: dict[str, Any] = track_event()
    headers = {"Origin": ORIGIN}
    if key_form == "basic":
        headers.update(basic_auth(keys["public"]))
    elif key_form == "header":
        headers["X-Write-Key"] = keys["public"]
    else:
        body["writeKey"] = keys["public"]
    response = await post(http, stack, "track", body, headers)
    assert response.status_code == 200, response.text


async def test_text_plain_and_gzip_bodies(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], project_id: str
) -> None:
    # What navigator.sendBeacon sends: text/plain (no preflight), the key in the body.
    beacon = {**track_event(event="Tab Closed"), "writeKey": keys["public"]}
    plain = await post(
        http,
        stack,
        "track",
        str(beacon).replace("'", '"').encode(),
        {"Origin": ORIGIN, "Content-Type": "text/plain"},
    )
    assert plain.status_code == 200, plain.text
    compressed = gzip.compress(b'{"batch": [{"type": "track", "event": "Zipped", "userId": "u"}]}')
    zipped = await post(
        http, stack, "batch", compressed, basic_auth(keys["secret"]) | {"Content-Encoding": "gzip"}
    )
    assert zipped.status_code == 200, zipped.text
    names = sorted(e["event"] for env in await stored_envelopes(stack, project_id) for e in env.events)
    assert names == ["Tab Closed", "Zipped"]


async def test_secret_key_from_a_server_may_set_context_ip_public_may_not(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], project_id: str
) -> None:
    event = track_event(context={"ip": "198.51.100.9", "locale": "de"})
    assert (await post(http, stack, "track", event, basic_auth(keys["secret"]))).status_code == 200
    assert (await post(http, stack, "track", event, browser(keys))).status_code == 200
    by_kind = {env.key_kind: env.events[0]["context"] for env in await stored_envelopes(stack, project_id)}
    assert by_kind["secret"] == {"ip": "198.51.100.9", "locale": "de"}
    assert by_kind["public"] == {"locale": "de"}


# -- batches ---------------------------------------------------------------------------------------


async def test_a_mixed_batch_stores_the_valid_events_and_lists_the_invalid(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], project_id: str
) -> None:
    batch = {
        "batch": [
            {"type": "track", "event": "Good 1", "userId": "u", "messageId": "g1"},
            {"type": "track", "userId": "u"},
            {"type": "identify", "userId": "u", "traits": {"a": 1}, "messageId": "g2"},
            {"type": "teleport", "userId": "u"},
            {"type": "group", "anonymousId": "a"},
            "not an object",
        ],
        "context": {"library": {"name": "test"}},
    }
    response = await post(
        http, stack, "batch", batch, basic_auth(keys["secret"]) | {"Content-Type": "text/plain"}
    )
    assert response.status_code == 413  # six events: over this edge's limit of five
    batch["batch"] = batch["batch"][:5]
    response = await post(http, stack, "batch", batch, basic_auth(keys["secret"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["code"], r["field"]) for r in body["rejected"]] == [
        (1, "missing_field", "event"),
        (3, "invalid_type", "type"),
        (4, "missing_field", "groupId"),
    ]
    [envelope] = await stored_envelopes(stack, project_id)
    assert [e["messageId"] for e in envelope.events] == ["g1", "g2"]
    # Kept once (envelope version 3); consumers apply it to each event without its own.
    assert envelope.context == {"library": {"name": "test"}}
    assert all("context" not in e for e in envelope.events)


async def test_a_batch_with_no_valid_event_is_refused_whole(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], project_id: str
) -> None:
    response = await post(http, stack, "batch", {"batch": [{"type": "track"}, 7]}, basic_auth(keys["secret"]))
    assert response.status_code == 400
    assert response.json()["code"] == "no_valid_events"
    assert [e["index"] for e in response.json()["errors"]] == [0, 1]
    assert await stored_count(stack, project_id) == 0


# -- rejections ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "status", "code", "field"),
    [
        ("unknown_key", 401, "unknown_key", None),
        ("no_key", 401, "missing_key", None),
        ("bad_basic", 401, "invalid_authorization", None),
        ("malformed_json", 400, "invalid_json", None),
        ("json_not_object", 400, "invalid_json", None),
        ("no_origin", 403, "origin_not_allowed", None),
        ("wrong_origin", 403, "origin_not_allowed", None),
        ("lookalike_origin", 403, "origin_not_allowed", None),
        ("secret_from_browser", 403, "secret_key_from_browser", None),
        ("no_event_name", 400, "missing_field", "event"),
        ("no_user", 400, "missing_field", "userId"),
        ("alias_without_previous", 400, "missing_field", "previousId"),
        ("group_without_id", 400, "missing_field", "groupId"),
        ("bad_timestamp", 400, "invalid_timestamp", "timestamp"),
        ("bad_sent_at", 400, "invalid_timestamp", "sentAt"),
        ("long_message_id", 400, "invalid_field", "messageId"),
        ("properties_not_object", 400, "invalid_field", "properties"),
        ("too_deep", 400, "too_deep", None),
        ("event_too_large", 413, "event_too_large", None),
        ("body_too_large", 413, "payload_too_large", None),
        ("batch_not_list", 400, "invalid_batch", "batch"),
        ("bad_gzip", 400, "invalid_gzip", None),
        ("gzip_bomb", 413, "payload_too_large", None),
        ("brotli", 415, "unsupported_encoding", None),
    ],
)
async def test_rejections_are_clear_and_store_nothing(
    stack: Stack,
    http: httpx.AsyncClient,
    keys: dict[str, str],
    project_id: str,
    case: str,
    status: int,
    code: str,
    field: str | None,
) -> None:
    public = browser(keys)
    secret = basic_auth(keys["secret"])
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(8):
        cursor["x"] = {}
        cursor = cursor["x"]
    requests: dict[str, tuple[str, bytes | dict[str, Any], dict[str, str]]] = {
        "unknown_key": ("track", track_event(), {**basic_auth("hwpk_not-a-key"), "Origin": ORIGIN}),
        "no_key": ("track", track_event(), {"Origin": ORIGIN}),
        "bad_basic": ("track", track_event(), {"Authorization": "Basic !!!"}),
        "malformed_json": ("track", b'{"event": "x",', public),
        "json_not_object": ("track", b"[1, 2]", public),
        "no_origin": ("track", track_event(), basic_auth(keys["public"])),
        "wrong_origin": ("track", track_event(), browser(keys, "https://evil.example")),
        "lookalike_origin": ("track", track_event(), browser(keys, "https://evilexample.org")),
        "secret_from_browser": ("track", track_event(), {**secret, "Origin": ORIGIN}),
        "no_event_name": ("track", track_event(event=""), public),
        "no_user": ("track", {"event": "x"}, public),
        "alias_without_previous": ("alias", {"userId": "u"}, public),
        "group_without_id": ("group", {"userId": "u"}, public),
        "bad_timestamp": ("track", track_event(timestamp="yesterday"), public),
        "bad_sent_at": ("track", track_event(sentAt=12), public),
        "long_message_id": ("track", track_event(messageId="m" * 101), public),
        "properties_not_object": ("track", track_event(properties=[1]), public),
        "too_deep": ("track", track_event(properties=deep), public),
        "event_too_large": ("track", track_event(properties={"blob": "x" * 2100}), public),
        "body_too_large": ("track", track_event(properties={"blob": "x" * 9000}), public),
        "batch_not_list": ("batch", {"batch": {"type": "track"}}, secret),
        "bad_gzip": ("track", b"\x1f\x8bnot gzip", secret | {"Content-Encoding": "gzip"}),
        "gzip_bomb": ("track", gzip.compress(b" " * 5_000_000), secret | {"Content-Encoding": "gzip"}),
        "brotli": ("track", b"...", secret | {"Content-Encoding": "br"}),
    }
    path, body, headers = requests[case]
    response = await post(http, stack, path, body, headers)
    assert response.status_code == status, response.text
    error = response.json()
    assert (error["status"], error["code"], error.get("field")) == (status, code, field)
    assert error["message"]
    assert await stored_count(stack, project_id) == 0


async def test_a_body_over_the_limit_is_refused_before_it_is_read(stack: Stack, keys: dict[str, str]) -> None:
    """Raw HTTP over a TCP connection to the edge's own port: the whole answer (413, its JSON
    error, and the close) comes while the announced body is still unsent."""
    assert stack.edge_url is not None
    host, port = stack.edge_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        assert writer.get_extra_info("socket").getpeername() == (host, int(port))
        # Announce 10 MB but send only the headers: the answer must come without the body.
        writer.write(
            b"POST /v1/track HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # to the end: the edge closes
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    assert status_line.startswith("HTTP/1.1 413")
    assert "connection: close" in (line.lower() for line in header_lines)
    assert json.loads(body)["code"] == "payload_too_large"


async def test_wrong_method_is_405(stack: Stack, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{stack.edge_url}/v1/track")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


# -- CORS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [(ORIGIN, True), ("https://app.example.org", True), ("https://evil.example", False), (None, False)],
)
async def test_preflight_answers_only_allowed_origins(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], origin: str | None, allowed: bool
) -> None:
    headers = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    if origin:
        headers["Origin"] = origin
    response = await http.options(f"{stack.edge_url}/v1/batch", headers=headers)
    if allowed:
        assert response.status_code == 204
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "content-type" in response.headers["Access-Control-Allow-Headers"]
        assert response.headers["Vary"] == "Origin"
    else:
        assert response.status_code == 403
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_cors_headers_follow_the_origin_never_a_wildcard(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    accepted = await post(http, stack, "track", track_event(), browser(keys, "https://a.example.org"))
    assert accepted.headers["Access-Control-Allow-Origin"] == "https://a.example.org"
    invalid = await post(http, stack, "track", track_event(event=""), browser(keys))
    assert invalid.status_code == 400
    assert invalid.headers["Access-Control-Allow-Origin"] == ORIGIN  # the page can read why
    refused = await post(http, stack, "track", track_event(), browser(keys, "https://evil.example"))
    assert "Access-Control-Allow-Origin" not in refused.headers
    server = await post(http, stack, "track", track_event(), basic_auth(keys["secret"]))
    assert "Access-Control-Allow-Origin" not in server.headers


# -- envelope --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarded_for", "expected"),
    [
        (None, "127.0.0.1"),
        ("203.0.113.7", "203.0.113.7"),
        ("198.51.100.1, 203.0.113.7", "203.0.113.7"),  # only the hop our proxy saw is believed
        ("203.0.113.7, 10.1.2.3", "203.0.113.7"),  # 10.0.0.0/8 is a trusted proxy too
        ("not-an-ip", "127.0.0.1"),
    ],
)
async def test_client_ip_from_trusted_proxies_only(
    stack: Stack,
    http: httpx.AsyncClient,
    keys: dict[str, str],
    project_id: str,
    forwarded_for: str | None,
    expected: str,
) -> None:
    headers = basic_auth(keys["secret"]) | ({"X-Forwarded-For": forwarded_for} if forwarded_for else {})
    assert (await post(http, stack, "track", track_event(), headers)).status_code == 200
    [envelope] = await stored_envelopes(stack, project_id)
    assert envelope.ip == expected


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(
    make_stack,
    http: httpx.AsyncClient,
    project_id: str,  # type: ignore[no-untyped-def]
) -> None:
    stack = await make_stack(edge=EdgeSettings(port=0), control=True)
    keys = await create_project(http, stack, project_id)
    headers = basic_auth(keys["secret"]) | {"X-Forwarded-For": "203.0.113.7"}
    assert (await post(http, stack, "track", track_event(), headers)).status_code == 200
    [envelope] = await stored_envelopes(stack, project_id)
    assert envelope.ip == "127.0.0.1"


async def test_clock_skew_is_corrected_with_sent_at(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], project_id: str
) -> None:
    # A device whose clock runs an hour ahead: both its timestamp and its sentAt are an hour off.
    device_now = datetime.now(UTC) + timedelta(hours=1)
    happened = device_now - timedelta(seconds=30)
    batch = {
        "batch": [{"type": "track", "event": "Skewed", "userId": "u", "timestamp": happened.isoformat()}],
        "sentAt": device_now.isoformat(),
    }
    assert (await post(http, stack, "batch", batch, basic_auth(keys["secret"]))).status_code == 200
    no_time = track_event(event="Now")
    assert (await post(http, stack, "track", no_time, basic_auth(keys["secret"]))).status_code == 200
    # The envelope keeps what the client said; the consumers' rows correct it.
    envelopes = await stored_envelopes(stack, project_id)
    skewed = next(env for env in envelopes if env.events[0]["event"] == "Skewed")
    assert (skewed.sent_at, skewed.events[0]["timestamp"]) == (device_now.isoformat(), happened.isoformat())
    rows = {
        row[COLUMNS.index("event")]: dict(zip(COLUMNS, row, strict=True))
        for data in await stored_messages(stack, project_id)
        for row in envelope_rows(decode_envelope(data), Enricher(None))
    }
    corrected = rows["Skewed"]["timestamp"]
    assert abs((datetime.now(UTC) - timedelta(seconds=30)) - corrected) < timedelta(seconds=5)
    assert rows["Skewed"]["sent_at"] == device_now
    assert abs(rows["Now"]["timestamp"] - datetime.now(UTC)) < timedelta(seconds=5)


# -- rate limits -----------------------------------------------------------------------------------


async def test_project_rate_limit_answers_429_with_retry_after(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    keys = await create_project(
        http,
        stack,
        project_id,
        settings={"rate_limits": {"project_events_per_second": 1, "burst_seconds": 3}},
    )
    headers = basic_auth(keys["secret"])
    statuses = [(await post(http, stack, "track", track_event(), headers)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]  # the burst: 3 s at 1 event/s
    limited = await post(http, stack, "track", track_event(), headers)
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 2
    assert await stored_count(stack, project_id) == 3


async def test_per_ip_rate_limit_keeps_clients_apart(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    keys = await create_project(http, stack, project_id, settings=ONE_EVENT_PER_IP_PER_SECOND)
    send = functools.partial(track_from, http, stack, keys["secret"])  # (ip) -> status
    assert [await send("203.0.113.1") for _ in range(3)] == [200, 200, 429]
    assert await send("203.0.113.2") == 200  # another client has its own bucket


# -- durability ------------------------------------------------------------------------------------


async def test_no_2xx_when_jetstream_cannot_acknowledge(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], nats_server: NatsServerProcess
) -> None:
    nats_server.kill()
    response = await post(http, stack, "track", track_event(), basic_auth(keys["secret"]))
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert int(response.headers["Retry-After"]) > 0


async def test_a_503_logs_one_line_with_its_reason(
    stack: Stack,
    http: httpx.AsyncClient,
    keys: dict[str, str],
    nats_server: NatsServerProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nats_server.kill()
    with caplog.at_level(logging.WARNING, logger="headwater.edge.ingest"):
        response = await post(http, stack, "track", track_event(), basic_auth(keys["secret"]))
    assert response.status_code == 503
    [record] = [r for r in caplog.records if r.name == "headwater.edge.ingest"]
    assert record.exc_info is None and "\n" not in record.getMessage()
    assert "answering 503" in record.getMessage() and "JetStream" in record.getMessage()


async def test_metrics_count_requests_and_events(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await post(http, stack, "track", track_event(), basic_auth(keys["secret"]))
    await post(http, stack, "track", track_event(event=""), basic_auth(keys["secret"]))
    scraped = await http.get(f"{stack.edge_operator_url}/metrics")
    # The text format every Prometheus reads (before 3.0, only version 0.0.4).
    assert scraped.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = scraped.text
    assert 'headwater_edge_requests_total{endpoint="track",status="200"} 1.0' in text
    assert 'headwater_edge_requests_total{endpoint="track",status="400"} 1.0' in text
    assert 'outcome="accepted"' in text and 'reason="missing_field"' in text
    assert "headwater_edge_publish_seconds_count 1.0" in text

    # Within this stack's limits (5 events, 2 KB each), a batch whose envelope passes 4 KB.
    batch = {"batch": [{**track_event(), "type": "track", "properties": {"note": "x" * 1200}}] * 5}
    assert (await post(http, stack, "batch", batch, basic_auth(keys["secret"]))).status_code == 200
    text = (await http.get(f"{stack.edge_operator_url}/metrics")).text
    sizes = dict(re.findall(r'headwater_edge_envelope_bytes_total\{form="(\w+)"\} ([\d.e+]+)', text))
    assert float(sizes["json"]) > 4096 + float(sizes["stored"])  # the batch's envelope was compressed


async def test_a_shutdown_delay_keeps_serving_while_reporting_not_ready(
    make_stack,  # type: ignore[no-untyped-def]
    http: httpx.AsyncClient,
    project_id: str,
) -> None:
    stack = await make_stack(edge=EdgeSettings(port=0, shutdown_delay_seconds=2.0), control=True)
    keys = await create_project(http, stack, project_id)
    assert (await http.get(f"{stack.edge_url}/readyz")).status_code == 200
    # The public port says only whether the edge is ready; the operator listener says why.
    assert (await http.get(f"{stack.edge_url}/metrics")).status_code == 404
    stopping = asyncio.create_task(stack.stop())  # what SIGTERM does
    public = await eventually(
        lambda: http.get(f"{stack.edge_url}/readyz"), lambda r: r.status_code == 503, timeout=1.5
    )
    assert public.json() == {"ready": False}
    ready = await http.get(f"{stack.edge_operator_url}/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["accepting"] is False
    # Still taking events (and answering only once they are durable) while the balancer notices.
    assert (await post(http, stack, "track", track_event(), basic_auth(keys["secret"]))).status_code == 200
    assert await stored_count(stack, project_id) == 1
    await stopping
    with pytest.raises(httpx.TransportError):
        await http.get(f"{stack.edge_url}/readyz")


async def test_the_2xx_waits_for_the_jetstream_ack(
    make_stack,
    http: httpx.AsyncClient,
    project_id: str,
    nats_server: NatsServerProcess,  # type: ignore[no-untyped-def]
) -> None:
    stack = await make_stack(edge=EdgeSettings(port=0, publish_timeout_seconds=30), control=True)
    keys = await create_project(http, stack, project_id)
    nats_server.pause()  # JetStream holds its acknowledgement back
    try:
        pending = asyncio.create_task(post(http, stack, "track", track_event(), basic_auth(keys["secret"])))
        await asyncio.sleep(1.5)
        assert not pending.done(), "the edge answered before JetStream acknowledged"
    finally:
        nats_server.resume()
    response = await asyncio.wait_for(pending, 20)
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == response.json()["request_id"]
    assert await stored_count(stack, project_id) == 1
