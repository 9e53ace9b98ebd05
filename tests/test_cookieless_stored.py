"""What a cookieless project stores, end to end over real HTTP, NATS and the embedded ClickHouse:
a hashed anonymousId, and the client's address nowhere but as its network — neither on the
stream nor in the events row or its context (docs/privacy.md#cookieless-visitors)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from hw_testing import (
    SpoolingStackFactory,
    StackFactory,
    admin_headers,
    basic_auth,
    create_project,
    eventually,
    query_rows,
    track_event,
)

from headwater.core.wire.envelope import Envelope, unpack
from headwater.core.wire.subjects import EVENTS_STREAM, events_subject
from headwater.edge.settings import EdgeSettings
from headwater.ops.natsserver import NatsServerProcess

pytestmark = pytest.mark.services
ORIGIN = "https://shop.example"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0"
# Oxford University and Janet (the UK academic network): GB in the bundled GeoLite2 data, at the
# address and at its /24 or /48 alike.
OXFORD_V4, OXFORD_V4_NETWORK = "129.67.0.77", "129.67.0.0"
JANET_V6, JANET_V6_NETWORK = "2001:630:1:2::77", "2001:630:1::"


async def test_only_the_network_and_a_hashed_id_are_stored(
    make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    edge = EdgeSettings(port=0, trusted_proxies=("127.0.0.0/8",))
    stack = await make_stack(edge=edge, control=True, consumer=True)
    # Even where the project keeps addresses whole: under the mode it is only ever given networks.
    settings = {"cookieless": {"mode": "always"}, "anonymisation": {"ip": "keep"}}
    created = await create_project(http, stack, project_id, allowed_origins=[ORIGIN], settings=settings)
    for number, address in ((1, OXFORD_V4), (2, JANET_V6)):
        event = track_event(
            messageId=f"m-{number}",
            anonymousId="from-the-page",
            # A browser may not say where it is: the edge drops context.ip from public-key events.
            context={"ip": address, "page": {"url": f"{ORIGIN}/pricing"}},
        )
        headers = {"Origin": ORIGIN, "User-Agent": CHROME, "X-Forwarded-For": address}
        response = await http.post(
            f"{stack.edge_url}/v1/track", json=event, headers=headers | basic_auth(str(created["public_key"]))
        )
        assert response.status_code == 200, response.text
    # A server relaying its user's address: its ids kept, the address reduced to the network.
    relayed = track_event(messageId="m-3", anonymousId="server-side", context={"ip": OXFORD_V4})
    response = await http.post(
        f"{stack.edge_url}/v1/track", json=relayed, headers=basic_auth(str(created["secret_key"]))
    )
    assert response.status_code == 200, response.text

    sql = "SELECT message_id, anonymous_id, ip, context, country_code FROM events ORDER BY message_id"
    rows = await eventually(lambda: query_rows(http, stack, project_id, sql), lambda r: len(r) == 3)
    (_, v4_id, v4_ip, v4_context, v4_country), (_, v6_id, v6_ip, v6_context, v6_country) = rows[:2]
    assert rows[2][1:] == ["server-side", OXFORD_V4_NETWORK, f'{{"ip":"{OXFORD_V4_NETWORK}"}}', "GB"]
    assert v4_id.startswith("cl_") and v6_id.startswith("cl_") and v4_id != v6_id
    assert (v4_ip, v6_ip) == (OXFORD_V4_NETWORK, JANET_V6_NETWORK)
    assert (v4_country, v6_country) == ("GB", "GB")  # geolocated from the network
    for context in (v4_context, v6_context):
        assert OXFORD_V4 not in context and JANET_V6 not in context and "from-the-page" not in context
    whole_rows = await query_rows(http, stack, project_id, "SELECT * FROM events")
    assert all(OXFORD_V4 not in str(row) and JANET_V6 not in str(row) for row in whole_rows)

    # The stream's messages (what the disk spool would hold, too) never carried the address.
    assert stack.nats is not None
    js = stack.nats.jetstream()
    subscription = await js.pull_subscribe(events_subject(project_id), stream=EVENTS_STREAM)
    messages = await subscription.fetch(3, timeout=5)
    assert len(messages) == 3
    for message in messages:
        data = unpack(message.data)
        assert OXFORD_V4.encode() not in data and JANET_V6.encode() not in data
        assert b"from-the-page" not in data
    await subscription.unsubscribe()


def spool_files(directory: str) -> list[bytes]:
    """The bytes of every file of the spool (its SQLite database, journal and write-ahead log)."""
    return [path.read_bytes() for path in Path(directory).rglob("*") if path.is_file()]


async def test_the_disk_spool_holds_only_the_network(
    make_spooling_stack: SpoolingStackFactory,
    http: httpx.AsyncClient,
    project_id: str,
    nats_server: NatsServerProcess,
) -> None:
    """NATS goes away after the edge read the day's salt: the browser events it then accepts wait
    in the disk spool, whose files never hold the client's address, and land with its network."""
    stack, _ = await make_spooling_stack(trusted_proxies=("127.0.0.0/8",))
    assert stack.edge_url is not None and stack.spool is not None and stack.registry is not None
    patch = {"allowed_origins": [ORIGIN], "settings": {"cookieless": {"mode": "always"}}}
    url = f"{stack.control_url}/v1/projects/{project_id}"
    patched = await http.patch(url, json=patch, headers=admin_headers())
    assert patched.status_code == 200, patched.text
    public_key = patched.json()["project"]["public_keys"][0]["key"]
    registry = stack.registry

    async def mode() -> str:
        project = registry.get(project_id)
        return project.settings.cookieless.mode if project is not None else ""

    await eventually(mode, lambda m: m == "always", timeout=5)
    headers = {"Origin": ORIGIN, "User-Agent": CHROME, "X-Forwarded-For": OXFORD_V4}
    headers |= basic_auth(public_key)

    async def send(message_id: str) -> int:
        event = track_event(messageId=message_id, context={"page": {"url": f"{ORIGIN}/"}})
        response = await http.post(f"{stack.edge_url}/v1/track", json=event, headers=headers)
        return response.status_code

    assert await send("before") == 200  # the edge reads (and here creates) the day's salt
    nats_server.stop()
    assert await send("spooled") == 200
    assert stack.spool.stats().entries == 1
    edge = stack.settings.edge
    assert edge is not None and edge.spool_dir is not None
    files = spool_files(edge.spool_dir)
    assert files and all(OXFORD_V4.encode() not in data for data in files)
    [record] = [record async for record in stack.spool.export()]
    assert Envelope.decode(record.body).ip == OXFORD_V4_NETWORK
    nats_server.start()

    sql = "SELECT message_id, anonymous_id, ip FROM events ORDER BY message_id"
    rows = await eventually(
        lambda: query_rows(http, stack, project_id, sql), lambda r: len(r) == 2, timeout=30, interval=0.5
    )
    [(_, before_id, before_ip), (_, spooled_id, spooled_ip)] = rows
    assert before_id == spooled_id and before_id.startswith("cl_")
    assert before_ip == spooled_ip == OXFORD_V4_NETWORK
