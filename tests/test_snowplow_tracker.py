"""PyPI's `snowplow-tracker` against the real edge (real NATS, embedded ClickHouse): page views,
structured and self-describing events over its POST and GET emitters land as rows with the mapped
columns; the project is named by a key or an app id; refusals store nothing.

The library blocks (requests), so its calls go through `asyncio.to_thread` while the stack serves on
this test's loop. A requests session hook records each answer the library got.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
from hw_testing import admin_headers, create_project, eventually, query_rows
from snowplow_tracker import (  # type: ignore[import-untyped]
    Emitter,
    PagePing,
    PageView,
    SelfDescribing,
    SelfDescribingJson,
    StructuredEvent,
    Subject,
    Tracker,
)
from snowplow_tracker import __version__ as TRACKER_VERSION

from headwater.edge.snowplow import PAYLOAD_DATA_SCHEMAS, TP2_PATH
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services

ORIGIN = "https://shop.example"
APP_ID = "shop-web"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
BUTTON = "iglu:com.acme/button_click/jsonschema/1-0-0"
USER_ENTITY = "iglu:com.acme/user/jsonschema/1-0-0"
COLUMNS = {
    **{name: name for name in ("message_id", "type", "event", "user_id", "anonymous_id", "page_url")},
    **{name: name for name in ("page_path", "page_title", "referrer", "properties", "context", "browser")},
    "timestamp": "toUnixTimestamp64Milli(timestamp)",
    "received_at": "toUnixTimestamp64Milli(received_at)",
}


@pytest.fixture
async def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    stack: Stack = await make_stack(edge=True, control=True, consumer=True)
    return stack


@pytest.fixture
async def keys(stack: Stack, http: httpx.AsyncClient, project_id: str) -> dict[str, str]:
    created = await create_project(
        http, stack, project_id, allowed_origins=[ORIGIN], settings={"snowplow": {"app_ids": [APP_ID]}}
    )
    return {"public": created["public_key"], "secret": created["secret_key"]}


class Answers:
    """The status and headers of each response the tracker got."""

    def __init__(self) -> None:
        self.responses: list[requests.Response] = []

    def hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.responses.append(response)

    @property
    def statuses(self) -> list[int]:
        return [r.status_code for r in self.responses]


def tracker(
    stack: Stack,
    app_id: str,
    method: str = "post",
    origin: str | None = None,
    encode_base64: bool = True,
    batch_size: int = 10,
) -> tuple[Tracker, Answers]:
    answers = Answers()
    session = requests.Session()
    session.hooks["response"].append(answers.hook)
    if origin is not None:
        session.headers["Origin"] = origin
    assert stack.edge_url is not None
    emitter = Emitter(stack.edge_url, method=method, batch_size=batch_size, session=session)
    subject = (
        Subject()
        .set_user_id("user-1")
        .set_domain_user_id("device-1")
        .set_domain_session_id("session-1")
        .set_lang("de-DE")
        .set_useragent(CHROME)
        .set_screen_resolution(1920, 1080)
        .set_timezone("Europe/Berlin")
    )
    return Tracker("hw", emitter, subject=subject, app_id=app_id, encode_base64=encode_base64), answers


async def call(*calls: Callable[[], object]) -> None:
    for one in calls:
        await asyncio.to_thread(one)


async def rows(http: httpx.AsyncClient, stack: Stack, project_id: str, expected: int) -> list[dict[str, Any]]:
    sql = f"SELECT {', '.join(COLUMNS.values())} FROM events FINAL ORDER BY timestamp, event"
    found = await eventually(
        lambda: query_rows(http, stack, project_id, sql),
        lambda r: len(r) >= expected,
        timeout=15,
        interval=0.2,
    )
    assert len(found) == expected, found
    return [dict(zip(COLUMNS, row, strict=True)) for row in found]


def self_describing(tracker_: Tracker) -> Callable[[], object]:
    event = SelfDescribing(
        SelfDescribingJson(BUTTON, {"id": "buy", "count": 2}),
        context=[SelfDescribingJson(USER_ENTITY, {"tier": "gold"})],
    )
    return lambda: tracker_.track(event)


@pytest.mark.parametrize("encode_base64", [True, False], ids=["ue_px+cx", "ue_pr+co"])
async def test_post_emitter_events_land_as_rows_with_the_mapped_columns(
    stack: Stack, http: httpx.AsyncClient, project_id: str, keys: dict[str, str], encode_base64: bool
) -> None:
    """A server-side tracker (the secret key as its app id) posts one tp2 batch of four events."""
    started_ms = int(time.time() * 1000)
    sp, answers = tracker(stack, keys["secret"], encode_base64=encode_base64)
    await call(
        lambda: sp.track(
            PageView("https://shop.example/pricing?utm_source=news", "Pricing", "https://ref.example/")
        ),
        lambda: sp.track(StructuredEvent("shop", "add-to-basket", "sku-1", "red", 2.5)),
        self_describing(sp),
        lambda: sp.track(PagePing("https://shop.example/pricing", "Pricing", min_y=0, max_y=640)),
        sp.flush,
    )
    assert answers.statuses == [200]
    by_event = {row["type"] + ":" + row["event"]: row for row in await rows(http, stack, project_id, 4)}
    assert set(by_event) == {"page:", "track:add-to-basket", "track:com.acme/button_click", "track:Page Ping"}
    for row in by_event.values():
        assert (row["user_id"], row["anonymous_id"], row["browser"]) == ("user-1", "device-1", "Chrome")
        context = json.loads(row["context"])
        assert context["sessionId"] == "session-1"
        assert (context["locale"], context["timezone"]) == ("de-DE", "Europe/Berlin")
        assert context["screen"] == {"width": 1920, "height": 1080}
        assert context["library"]["version"] == f"py-{TRACKER_VERSION}"
        assert keys["secret"] not in row["context"]  # the aid is never stored
        # Snowplow's derived time: collector time - (stm - dtm), never after the arrival.
        assert started_ms - 60_000 <= row["timestamp"] <= row["received_at"]

    page = by_event["page:"]
    assert (page["page_url"], page["page_path"], page["page_title"]) == (
        "https://shop.example/pricing?utm_source=news",
        "/pricing",
        "Pricing",
    )
    assert page["referrer"] == "https://ref.example/"
    structured = json.loads(by_event["track:add-to-basket"]["properties"])
    assert structured == {
        "category": "shop",
        "action": "add-to-basket",
        "label": "sku-1",
        "property": "red",
        "value": 2.5,
    }
    button = by_event["track:com.acme/button_click"]
    assert json.loads(button["properties"]) == {"id": "buy", "count": 2}
    context = json.loads(button["context"])
    assert context["snowplow_event_schema"] == BUTTON
    assert context["snowplow_contexts"] == [{"schema": USER_ENTITY, "data": {"tier": "gold"}}]
    ping = by_event["track:Page Ping"]
    assert json.loads(ping["properties"])["max_y"] == 640
    assert ping["page_path"] == "/pricing"


async def test_get_emitter_pixel(
    stack: Stack, http: httpx.AsyncClient, project_id: str, keys: dict[str, str]
) -> None:
    """The GET emitter sends each event to /i and is answered with a 1x1 GIF."""
    sp, answers = tracker(stack, keys["secret"], method="get", encode_base64=False, batch_size=1)
    await call(
        lambda: sp.track(PageView("https://shop.example/docs", "Docs")),
        lambda: sp.track(StructuredEvent("docs", "search", "query")),
        self_describing(sp),
    )
    assert answers.statuses == [200, 200, 200]
    for response in answers.responses:
        assert response.headers["content-type"] == "image/gif"
        assert response.content.startswith(b"GIF89a")
    found = await rows(http, stack, project_id, 3)
    assert sorted(row["type"] + ":" + row["event"] for row in found) == [
        "page:",
        "track:com.acme/button_click",
        "track:search",
    ]
    page = next(row for row in found if row["type"] == "page")
    assert (page["page_path"], page["page_title"], page["user_id"]) == ("/docs", "Docs", "user-1")


async def test_app_id_and_key_rules_and_what_is_refused_stores_nothing(
    stack: Stack, http: httpx.AsyncClient, project_id: str, keys: dict[str, str]
) -> None:
    async def send(app_id: str, origin: str | None) -> Answers:
        sp, answers = tracker(stack, app_id, origin=origin)
        await call(lambda: sp.track(StructuredEvent("t", app_id[:20] + str(origin))), sp.flush)
        return answers

    # Refused: an unknown aid, an app id or public key from a foreign origin or none, a secret key
    # from a browser. Trackers do not retry 401/403.
    assert (await send("no-such-app", ORIGIN)).statuses == [401]
    assert (await send(APP_ID, "https://evil.example")).statuses == [403]
    assert (await send(APP_ID, None)).statuses == [403]
    assert (await send(keys["public"], "https://evil.example")).statuses == [403]
    assert (await send(keys["secret"], ORIGIN)).statuses == [403]
    refused = (await send("no-such-app", ORIGIN)).responses[0]
    assert refused.json()["code"] == "unknown_key"
    assert "access-control-allow-origin" not in refused.headers

    # Accepted: the app id and the public key from the allowed origin, with CORS and credentials.
    for app_id in (APP_ID, keys["public"]):
        answers = await send(app_id, ORIGIN)
        assert answers.statuses == [200]
        headers = answers.responses[0].headers
        assert headers["access-control-allow-origin"] == ORIGIN
        assert headers["access-control-allow-credentials"] == "true"
    # A pixel in a page (an <img>: no Origin) is judged by its Referer's origin.
    assert stack.edge_url is not None
    pixel = {"e": "pv", "aid": APP_ID, "tv": "js-3.24.0", "p": "web", "duid": "d", "url": ORIGIN + "/mail"}
    from_page = await http.get(stack.edge_url + "/i", params=pixel, headers={"Referer": ORIGIN + "/mail"})
    assert (from_page.status_code, from_page.headers["content-type"]) == (200, "image/gif")
    elsewhere = {"Referer": "https://evil.example/page"}
    assert (await http.get(stack.edge_url + "/i", params=pixel, headers=elsewhere)).status_code == 403
    found = await rows(http, stack, project_id, 3)
    assert sorted(r["type"] for r in found) == ["page", "track", "track"]

    # The project may accept its app ids from server-side trackers too.
    response = await http.patch(
        f"{stack.control_url}/v1/projects/{project_id}",
        json={"settings": {"snowplow": {"allow_without_origin": True}}},
        headers=admin_headers(),
    )
    assert response.status_code == 200, response.text
    assert response.json()["project"]["settings"]["snowplow"] == {
        "app_ids": [APP_ID],
        "allow_without_origin": True,
    }

    async def accepted_without_origin() -> list[int]:
        return (await send(APP_ID, None)).statuses

    await eventually(accepted_without_origin, lambda statuses: statuses == [200], timeout=5)
    await rows(http, stack, project_id, 4)

    # Preflights: allowed origins only, with credentials.
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    answer = await http.options(stack.edge_url + TP2_PATH, headers=preflight)
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert "content-type" in answer.headers["access-control-allow-headers"]
    foreign = await http.options(
        stack.edge_url + TP2_PATH, headers={**preflight, "Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    assert "access-control-allow-origin" not in foreign.headers

    # Refusals are counted by endpoint and status; the refused events by project and code.
    metrics = (await http.get(f"{stack.edge_operator_url}/metrics")).text
    assert 'headwater_edge_requests_total{endpoint="snowplow_tp2",status="401"} 2.0' in metrics
    assert 'headwater_edge_requests_total{endpoint="snowplow_tp2",status="403"}' in metrics
    assert 'headwater_edge_requests_total{endpoint="snowplow_tp2",status="200"}' in metrics


async def test_an_app_id_belongs_to_one_project(
    stack: Stack, http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    url = f"{stack.control_url}/v1/projects"
    taken = {"settings": {"snowplow": {"app_ids": ["other", APP_ID]}}}
    response = await http.post(url, json={"id": "second", **taken}, headers=admin_headers())
    assert response.status_code == 409, response.text
    assert (response.json()["code"], response.json()["field"]) == (
        "app_id_taken",
        "settings.snowplow.app_ids",
    )
    assert (await http.post(url, json={"id": "second"}, headers=admin_headers())).status_code == 201
    response = await http.patch(f"{url}/second", json=taken, headers=admin_headers())
    assert response.status_code == 409
    assert response.json()["code"] == "app_id_taken"
    bad = {"settings": {"snowplow": {"app_ids": ["has space"]}}}
    response = await http.patch(f"{url}/second", json=bad, headers=admin_headers())
    assert response.status_code == 400
    assert response.json()["field"].startswith("settings.snowplow.app_ids")


def payload(schema: str, *events: dict[str, str]) -> dict[str, Any]:
    return {"schema": schema, "data": list(events)}


def event(aid: str, **params: str) -> dict[str, str]:
    return {"tv": "test-0", "p": "srv", "aid": aid, "duid": "device-1", "e": "pv", **params}


async def test_tp2_revisions_bad_events_dedup_and_clock_correction(
    stack: Stack, http: httpx.AsyncClient, project_id: str, keys: dict[str, str]
) -> None:
    """Hand-made tp2 requests, for what the library cannot be made to send."""
    assert stack.edge_url is not None
    url = stack.edge_url + TP2_PATH
    aid = keys["secret"]
    # Every published payload_data revision is accepted.
    for schema in sorted(PAYLOAD_DATA_SCHEMAS):
        revision = schema.rsplit("/", 1)[1]
        response = await http.post(url, json=payload(schema, event(aid, eid=f"rev-{revision}")))
        assert response.status_code == 200, response.text
    latest = max(PAYLOAD_DATA_SCHEMAS)
    later = await http.post(url, json=payload(latest.replace("1-0-4", "1-0-5"), event(aid)))
    assert (later.status_code, later.json()["code"]) == (400, "unsupported_schema")

    # Bad events are refused one by one, the good ones beside them stored.
    mixed = payload(
        latest,
        event(aid, eid="good-1"),
        event(aid, eid="bad-type", e="tr"),
        event(aid, eid="bad-ue", e="ue", ue_px="!!"),
        event("another-aid", eid="bad-aid"),
        event(aid, eid="good-2"),
    )
    response = await http.post(url, json=mixed)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2
    assert [(r["index"], r["code"], r["field"]) for r in response.json()["rejected"]] == [
        (1, "unsupported_event", "e"),
        (2, "invalid_field", "ue_px"),
        (3, "aid_mismatch", "aid"),
    ]
    metrics = (await http.get(f"{stack.edge_operator_url}/metrics")).text
    for code in ("unsupported_event", "invalid_field", "aid_mismatch"):
        counted = f'{{outcome="rejected",project="{project_id}",reason="{code}"}} 1.0'
        assert "headwater_edge_events_total" + counted in metrics, code
    # eid is the message id: a resent event is stored once.
    assert (await http.post(url, json=payload(latest, event(aid, eid="good-1")))).status_code == 200

    # Device clock an hour behind: derived = collector - (stm - dtm); ttm wins as sent.
    now = int(time.time() * 1000)
    skewed = event(aid, eid="skewed", dtm=str(now - 3_600_000 - 5_000), stm=str(now - 3_600_000))
    true_time = event(aid, eid="true", dtm=str(now), stm=str(now + 10), ttm=str(now - 86_400_000))
    assert (await http.post(url, json=payload(latest, skewed, true_time))).status_code == 200

    found = await rows(http, stack, project_id, len(PAYLOAD_DATA_SCHEMAS) + 4)
    by_id = {row["message_id"]: row for row in found}
    assert {"good-1", "good-2", "skewed", "true"} <= set(by_id)
    assert not {"bad-type", "bad-ue", "bad-aid"} & set(by_id)
    assert by_id["skewed"]["timestamp"] == by_id["skewed"]["received_at"] - 5_000
    assert by_id["true"]["timestamp"] == now - 86_400_000
