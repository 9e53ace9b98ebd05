"""Bot and spam filtering end to end: events sent through the edge, judged by the consumer (its
worker processes, with the operator's data-centre file), stored flagged with their reason or, in
`drop` mode, not stored and counted in the consumer's metrics; a funnel leaves the flagged visitor
out unless asked to include bots (docs/privacy.md, "Bot and spam filtering")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hw_testing import (
    ADMIN_TOKEN,
    StackFactory,
    admin_headers,
    basic_auth,
    cli_env,
    create_project,
    eventually,
    query_rows,
    run_cli,
)

from headwater.consumers.settings import ConsumerSettings
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services

ORIGIN = "https://shop.example"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
NOW = datetime.now(UTC).replace(microsecond=0)
BASE = NOW - timedelta(hours=1)


def event(message_id: str, user: str, minutes: float, name: str = "Viewed", **context: Any) -> dict[str, Any]:
    when = (BASE + timedelta(minutes=minutes)).isoformat()
    return {"type": "track", "event": name, "userId": user, "messageId": message_id, "timestamp": when,
            "context": context}  # fmt: skip


@pytest.fixture
async def stack(make_stack: StackFactory, clickhouse_url: str, tmp_path: Path) -> Stack:
    ranges = tmp_path / "datacentres.csv"
    ranges.write_text("network,provider\n198.51.100.0/24,example-cloud\n")
    consumer = ConsumerSettings(
        clickhouse_url=clickhouse_url,
        flush_interval_seconds=0.2,
        port=0,
        workers=1,  # in a worker process: the operator's file reaches it
        datacentre_ranges=str(ranges),
    )
    return await make_stack(edge=True, control=True, consumer=consumer)


async def send(
    http: httpx.AsyncClient,
    stack: Stack,
    key: str,
    events: list[dict[str, Any]],
    agent: str,
    browser: bool = True,
) -> None:
    headers = {**basic_auth(key), "User-Agent": agent, **({"Origin": ORIGIN} if browser else {})}
    response = await http.post(f"{stack.edge_url}/v1/batch", json={"batch": events}, headers=headers)
    assert response.status_code == 200, response.text


SELECT_FLAGS = "SELECT message_id, is_bot, bot_reason FROM events FINAL"


async def flags(http: httpx.AsyncClient, stack: Stack, project_id: str, count: int) -> dict[str, list[Any]]:
    rows = await eventually(
        lambda: query_rows(
            http, stack, project_id, "SELECT message_id, is_bot, bot_reason FROM events FINAL"
        ),
        lambda rows: len(rows) >= count,
        timeout=20,
    )
    return {row[0]: row[1:] for row in rows}


async def funnel_counts(http: httpx.AsyncClient, stack: Stack, project_id: str, **options: Any) -> list[int]:
    body = {
        "steps": [{"kind": "event", "value": "Viewed"}, {"kind": "event", "value": "Bought"}],
        "window": {"value": 1, "unit": "hour"},
        "from": (BASE - timedelta(hours=1)).isoformat(),
        "to": NOW.isoformat(),
        **options,
    }
    url = f"{stack.control_url}/v1/projects/{project_id}/funnels/query"
    response = await http.post(url, json=body, headers=admin_headers())
    assert response.status_code == 200, response.text
    return [step["count"] for step in response.json()["steps"]]


async def test_bots_are_flagged_with_their_reason_and_left_out_of_funnels(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    created = await create_project(
        http,
        stack,
        project_id,
        allowed_origins=[ORIGIN],
        settings={"bots": {"ip_blocklist": ["192.0.2.0/24"]}},
    )
    public, secret = str(created["public_key"]), str(created["secret_key"])
    # A person and a crawler, each through the funnel; a person arriving from a referrer spammer.
    await send(http, stack, public, [event("p1", "person", 0), event("p2", "person", 5, "Bought")], CHROME)
    await send(
        http, stack, public, [event("b1", "crawler", 0), event("b2", "crawler", 5, "Bought")], GOOGLEBOT
    )
    spam = {"page": {"url": "https://shop.example/", "referrer": "https://www.semalt.com/promo"}}
    await send(http, stack, public, [event("s1", "spammed", 1, **spam)], CHROME)
    # A server relaying its end users' addresses: one on the blocklist, one in a data centre.
    relayed = [
        event("i1", "blocked", 2, ip="192.0.2.44", userAgent=CHROME),
        event("d1", "hosted", 2, ip="198.51.100.9", userAgent=CHROME),
        event("ok", "server", 2, ip="203.0.113.5", userAgent=CHROME),
    ]
    await send(http, stack, secret, relayed, "python-requests/2.31.0", browser=False)

    stored = await flags(http, stack, project_id, 8)
    assert stored == {
        "p1": [False, ""], "p2": [False, ""],
        "b1": [True, "crawler"], "b2": [True, "crawler"],
        "s1": [True, "referrer_spam"],
        "i1": [True, "ip_blocklist"],
        "d1": [True, "datacentre"],
        "ok": [False, ""],  # the server's own user agent (a library) is not the end user's
    }  # fmt: skip

    # The crawler went through the funnel too: left out unless the question includes bots (as are
    # the other flagged visitors, who viewed and did not buy).
    assert await funnel_counts(http, stack, project_id) == [2, 1]  # person, server
    assert await funnel_counts(http, stack, project_id, include_bots=True) == [6, 2]
    # The CLI's option says the same.
    cli = ("funnel", "--control-url", str(stack.control_url), "--project", project_id,
           "--step", "event:Viewed", "--step", "event:Bought", "--window", "1h",
           "--from", (BASE - timedelta(hours=1)).isoformat(), "--to", NOW.isoformat(), "--json")  # fmt: skip
    env = {**cli_env(), "HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN}
    for extra, counts in (((), [2, 1]), (("--include-bots",), [6, 2])):
        answer = (await run_cli(*cli, *extra, env=env)).json()
        assert [step["count"] for step in answer["steps"]] == counts
    # So does `headwater paths`: the people whose journeys start at the first step.
    paths = ("paths", "--control-url", str(stack.control_url), "--project", project_id,
             "--start", "event:Viewed", "--from", (BASE - timedelta(hours=1)).isoformat(),
             "--to", NOW.isoformat(), "--json")  # fmt: skip
    for extra, people in (((), 2), (("--include-bots",), 6)):
        assert (await run_cli(*paths, *extra, env=env)).json()["people"] == people


async def test_drop_mode_stores_nothing_of_bots_and_counts_them(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    created = await create_project(http, stack, project_id, allowed_origins=[ORIGIN])
    public = str(created["public_key"])
    response = await http.patch(
        f"{stack.control_url}/v1/projects/{project_id}",
        json={"settings": {"bots": {"mode": "drop"}}},
        headers=admin_headers(),
    )
    assert response.status_code == 200, response.text
    registry = stack.registry
    assert registry is not None

    async def mode() -> str:
        project = registry.get(project_id)
        return "" if project is None else project.settings.bots.mode

    await eventually(mode, lambda m: m == "drop", timeout=10)
    # One request (one message, one batch): a crawler's event beside a person's.
    batch = [event("bot", "crawler", 0, userAgent=GOOGLEBOT), event("person", "person", 0)]
    await send(http, stack, public, batch, CHROME)
    stored = await flags(http, stack, project_id, 1)
    assert stored == {"person": [False, ""]}  # written with the crawler's: that one was dropped

    async def metrics() -> str:
        return (await http.get(f"{stack.consumer_url}/metrics")).text

    dropped = f'headwater_consumer_events_dropped_total{{project="{project_id}",reason="crawler"}} 1.0'
    await eventually(metrics, lambda text: dropped in text, timeout=10)
    # The message was acknowledged: nothing is left for redelivery.
    assert stack.nats is not None
    js = stack.nats.jetstream()

    async def outstanding() -> tuple[int, int]:
        info = await js.consumer_info("HW_EVENTS", "hw-clickhouse")
        return info.num_ack_pending, info.num_pending

    await eventually(outstanding, lambda counts: counts == (0, 0), timeout=10)
