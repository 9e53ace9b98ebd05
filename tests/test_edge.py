"""The edge's track endpoint through its real HTTP port, with real NATS behind it."""

from __future__ import annotations

import gzip

import httpx
import pytest
from hw_testing import admin_headers, basic_auth, eventually, track_event

from headwater.edge.envelope import Envelope
from headwater.edge.settings import EdgeSettings
from headwater.edge.subjects import EVENTS_STREAM, events_subject
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services
ORIGIN = "https://shop.example.com"


@pytest.fixture
async def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    return await make_stack(
        edge=EdgeSettings(port=0, max_body_bytes=4096, max_event_bytes=2048, publish_timeout_seconds=1),
        control=True,
    )


@pytest.fixture
async def keys(stack: Stack, http: httpx.AsyncClient, project_id: str) -> dict[str, str]:
    response = await http.post(
        f"{stack.control_url}/v1/projects",
        json={"id": project_id, "allowed_origins": [ORIGIN]},
        headers=admin_headers(),
    )
    assert response.status_code == 201
    # The edge learns of the new project through its KV watcher.
    registry = stack.registry
    assert registry is not None

    async def known() -> bool:
        return registry.get(project_id) is not None

    await eventually(known, bool, timeout=5)
    return {"public": response.json()["public_key"], "secret": response.json()["secret_key"]}


async def post_track(
    http: httpx.AsyncClient, stack: Stack, body: bytes | dict[str, object], headers: dict[str, str]
) -> httpx.Response:
    url = f"{stack.edge_url}/v1/track"
    if isinstance(body, dict):
        return await http.post(url, json=body, headers=headers)
    return await http.post(url, content=body, headers=headers)


async def stored_count(stack: Stack, project_id: str) -> int:
    assert stack.nats is not None
    subject = events_subject(project_id)
    info = await stack.nats.jetstream().stream_info(EVENTS_STREAM, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def stored_envelopes(stack: Stack, project_id: str) -> list[Envelope]:
    assert stack.nats is not None
    js = stack.nats.jetstream()
    subscription = await js.pull_subscribe(events_subject(project_id), stream=EVENTS_STREAM)
    try:
        messages = await subscription.fetch(100, timeout=0.5)
    except TimeoutError:
        return []
    finally:
        await subscription.unsubscribe()
    return [Envelope.decode(m.data) for m in messages]


async def test_public_key_from_allowed_origin_is_stored_in_jetstream_before_2xx(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], project_id: str
) -> None:
    response = await post_track(
        http,
        stack,
        track_event(),
        {**basic_auth(keys["public"]), "Origin": ORIGIN, "User-Agent": "test-agent/1"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    # The 2xx came after the JetStream ack, so the envelope is already in the stream.
    assert await stored_count(stack, project_id) == 1
    [envelope] = await stored_envelopes(stack, project_id)
    assert envelope.request_id == response.json()["request_id"]
    assert envelope.project == project_id
    assert envelope.origin == ORIGIN
    assert envelope.user_agent == "test-agent/1"
    assert envelope.key_kind == "public"
    [event] = envelope.events
    assert event["type"] == "track" and event["event"] == "Signed Up" and event["userId"] == "user-1"
    assert event["messageId"]  # assigned by the edge


@pytest.mark.parametrize("key_form", ["basic", "header", "body"])
async def test_every_write_key_form_is_accepted(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], key_form: str
) -> None:
    body: dict[str, object] = track_event()
    headers = {"Origin": ORIGIN}
    if key_form == "basic":
        headers.update(basic_auth(keys["public"]))
    elif key_form == "header":
        headers["X-Write-Key"] = keys["public"]
    else:
        body["writeKey"] = keys["public"]
    response = await post_track(http, stack, body, headers)
    assert response.status_code == 200, response.text


async def test_secret_key_from_a_server_is_accepted(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], project_id: str
) -> None:
    response = await post_track(http, stack, track_event(messageId="server-1"), basic_auth(keys["secret"]))
    assert response.status_code == 200, response.text
    assert "Access-Control-Allow-Origin" not in response.headers
    [envelope] = await stored_envelopes(stack, project_id)
    assert envelope.key_kind == "secret"
    assert envelope.events[0]["messageId"] == "server-1"


@pytest.mark.parametrize(
    ("case", "status", "code", "field"),
    [
        ("unknown_key", 401, "unknown_key", None),
        ("no_key", 401, "missing_key", None),
        ("malformed_json", 400, "invalid_json", None),
        ("json_not_object", 400, "invalid_json", None),
        ("no_origin", 403, "origin_not_allowed", None),
        ("wrong_origin", 403, "origin_not_allowed", None),
        ("secret_from_browser", 403, "secret_key_from_browser", None),
        ("no_event_name", 400, "missing_field", "event"),
        ("no_user", 400, "missing_field", "userId"),
        ("bad_timestamp", 400, "invalid_timestamp", "timestamp"),
        ("long_message_id", 400, "invalid_field", "messageId"),
        ("properties_not_object", 400, "invalid_field", "properties"),
        ("event_too_large", 413, "event_too_large", None),
        ("body_too_large", 413, "payload_too_large", None),
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
    public = {**basic_auth(keys["public"]), "Origin": ORIGIN}
    requests: dict[str, tuple[bytes | dict[str, object], dict[str, str]]] = {
        "unknown_key": (track_event(), {**basic_auth("hwpk_not-a-key"), "Origin": ORIGIN}),
        "no_key": (track_event(), {"Origin": ORIGIN}),
        "malformed_json": (b'{"event": "x",', public),
        "json_not_object": (b"[1, 2]", public),
        "no_origin": (track_event(), basic_auth(keys["public"])),
        "wrong_origin": (track_event(), {**basic_auth(keys["public"]), "Origin": "https://evil.example"}),
        "secret_from_browser": (track_event(), {**basic_auth(keys["secret"]), "Origin": ORIGIN}),
        "no_event_name": (track_event(event=""), public),
        "no_user": ({"event": "x", "properties": {}}, public),
        "bad_timestamp": (track_event(timestamp="yesterday"), public),
        "long_message_id": (track_event(messageId="m" * 101), public),
        "properties_not_object": (track_event(properties=[1]), public),
        "event_too_large": (track_event(properties={"blob": "x" * 2100}), public),
        "body_too_large": (track_event(properties={"blob": "x" * 5000}), public),
    }
    body, headers = requests[case]
    response = await post_track(http, stack, body, headers)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["code"] == code
    assert error["status"] == status
    assert error["message"]
    assert error.get("field") == field
    assert await stored_count(stack, project_id) == 0


async def test_no_2xx_when_jetstream_cannot_acknowledge(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str], nats_server: NatsServerProcess
) -> None:
    nats_server.kill()
    response = await post_track(http, stack, track_event(), basic_auth(keys["secret"]))
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert int(response.headers["Retry-After"]) > 0


async def test_gzip_is_not_yet_accepted_silently(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # A gzip body the edge cannot read must be refused, never stored half-understood.
    body = gzip.compress(b'{"event":"x","userId":"u"}')
    response = await post_track(http, stack, body, {**basic_auth(keys["secret"]), "Content-Encoding": "gzip"})
    assert response.status_code == 400
