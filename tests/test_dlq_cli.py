"""`headwater dlq …` as an operator runs it: a subprocess against a real nats-server.

Dead-lettered messages are published straight to `hw.dlq.<project>` with the headers the consumer
sets; the command runs as an asyncio subprocess, so this test's event loop (and its NATS client)
keeps going.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hw_testing import Run, basic_auth, create_project, eventually, query_rows, run_cli, track_event
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from headwater.consumers.settings import ConsumerSettings
from headwater.core.wire.envelope import LZ4_FRAME_MAGIC, pack
from headwater.core.wire.subjects import DLQ_STREAM, EVENTS_STREAM, dlq_subject, events_subject
from headwater.ops.natsserver import NatsServerProcess

pytestmark = pytest.mark.services
ORIGIN = "http://localhost:3000"


async def headwater(server: NatsServerProcess, *args: str) -> Run:
    return await run_cli("dlq", *args, "--nats-url", server.url)


@dataclass(frozen=True, slots=True)
class Seeded:
    shop_json: int
    shop_text: int
    blog: int


SHOP_BODY = {"project": "shop", "batch": [{"type": "track", "event": "Bad", "messageId": "m-1"}]}


async def seed(js: JetStreamContext) -> Seeded:
    async def dead_letter(project: str, body: bytes, error: str, msg_id: str | None) -> int:
        headers = {
            "Hw-Error": error,
            "Hw-Original-Subject": events_subject(project),
            "Hw-Deliveries": "3",
        }
        if msg_id:
            headers["Hw-Original-Msg-Id"] = msg_id
        ack = await js.publish(dlq_subject(project), body, stream=DLQ_STREAM, headers=headers)
        return ack.seq

    return Seeded(
        shop_json=await dead_letter(
            "shop", json.dumps(SHOP_BODY).encode(), "invalid event: no userId", "orig-1"
        ),
        shop_text=await dead_letter("shop", b"\x00not json", "not JSON", "orig-2"),
        blog=await dead_letter("blog", b'{"project": "blog"}', "unknown project", None),
    )


async def count(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def events(js: JetStreamContext, subject: str, expected: int) -> list[Any]:
    """The messages on `subject` in HW_EVENTS, read by an ephemeral pull consumer."""
    sub = await js.pull_subscribe(
        subject, durable=None, stream=EVENTS_STREAM, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
    )
    try:
        messages = await sub.fetch(expected, timeout=5)
        if len(messages) == expected:
            with pytest.raises(asyncio.TimeoutError):
                messages += await sub.fetch(1, timeout=0.5)
        return messages
    finally:
        await sub.unsubscribe()


async def test_list_shows_filters_and_reads_only(
    nats_server: NatsServerProcess, js: JetStreamContext
) -> None:
    seeded = await seed(js)

    table = await headwater(nats_server, "list")
    assert table.code == 0, table.stderr
    assert "invalid event: no userId" in table.stdout and "unknown project" in table.stdout
    assert "3 message(s)" in table.stdout

    rows = (await headwater(nats_server, "list", "--json")).json()
    assert [r["seq"] for r in rows] == [seeded.shop_json, seeded.shop_text, seeded.blog]
    assert rows[0] == {
        "seq": seeded.shop_json,
        "project": "shop",
        "subject": "hw.dlq.shop",
        "time": rows[0]["time"],
        "size": len(json.dumps(SHOP_BODY)),
        "error": "invalid event: no userId",
        "deliveries": 3,
    }
    assert rows[0]["time"]

    blog = (await headwater(nats_server, "list", "--project", "blog", "--json")).json()
    assert [r["seq"] for r in blog] == [seeded.blog]
    limited = (await headwater(nats_server, "list", "--limit", "1", "--json")).json()
    assert [r["seq"] for r in limited] == [seeded.shop_json]

    assert await count(js, DLQ_STREAM) == 3
    assert await count(js, EVENTS_STREAM) == 0


async def test_show_prints_headers_and_body(nats_server: NatsServerProcess, js: JetStreamContext) -> None:
    seeded = await seed(js)

    shown = await headwater(nats_server, "show", str(seeded.shop_json))
    assert shown.code == 0, shown.stderr
    assert "Hw-Error: invalid event: no userId" in shown.stdout
    assert "Hw-Original-Msg-Id: orig-1" in shown.stdout
    assert "Hw-Original-Subject: hw.events.shop" in shown.stdout
    assert json.dumps(SHOP_BODY, indent=2) in shown.stdout

    text = await headwater(nats_server, "show", str(seeded.shop_text))
    assert text.code == 0, text.stderr
    assert "not json" in text.stdout

    raw = await headwater(nats_server, "show", str(seeded.shop_text), "--raw")
    assert raw.code == 0 and raw.stdout_bytes == b"\x00not json"

    missing = await headwater(nats_server, "show", "999")
    assert missing.code == 1 and "no message 999" in missing.stderr

    assert await count(js, DLQ_STREAM) == 3


async def test_show_inflates_a_compressed_envelope(
    nats_server: NatsServerProcess, js: JetStreamContext
) -> None:
    body = {**SHOP_BODY, "batch": SHOP_BODY["batch"] * 100}  # a batch: stored LZ4-framed
    stored = pack(json.dumps(body).encode())
    assert stored.startswith(LZ4_FRAME_MAGIC)
    ack = await js.publish(dlq_subject("shop"), stored, stream=DLQ_STREAM, headers={"Hw-Error": "x"})

    shown = await headwater(nats_server, "show", str(ack.seq))
    assert shown.code == 0, shown.stderr
    assert "body (LZ4-compressed on the stream):" in shown.stdout
    assert json.dumps(body, indent=2) in shown.stdout
    raw = await headwater(nats_server, "show", str(ack.seq), "--raw")
    assert raw.stdout_bytes == stored

    corrupt = await js.publish(dlq_subject("shop"), LZ4_FRAME_MAGIC + b"junk", stream=DLQ_STREAM)
    shown = await headwater(nats_server, "show", str(corrupt.seq))
    assert shown.code == 0, shown.stderr
    assert "not a readable LZ4 frame" in shown.stdout and "shown as stored" in shown.stdout


def replay_headers(message: Any) -> tuple[str, str | None, str | None]:
    headers = message.headers or {}
    return (
        headers.get("Nats-Msg-Id", ""),
        headers.get("Hw-Original-Msg-Id"),
        headers.get("Hw-Replayed-From"),
    )


async def test_replay_project_republishes_under_a_new_id_keeping_the_original(
    nats_server: NatsServerProcess, js: JetStreamContext
) -> None:
    seeded = await seed(js)

    dry = await headwater(nats_server, "replay", "--project", "shop", "--dry-run")
    assert dry.code == 0, dry.stderr
    assert "2 message(s) would be replayed" in dry.stdout
    assert await count(js, DLQ_STREAM) == 3 and await count(js, EVENTS_STREAM) == 0

    unconfirmed = await headwater(nats_server, "replay", "--project", "shop")
    assert unconfirmed.code == 1  # no --yes and no answer on stdin: aborted
    assert await count(js, DLQ_STREAM) == 3 and await count(js, EVENTS_STREAM) == 0

    replayed = await headwater(nats_server, "replay", "--project", "shop", "--yes")
    assert replayed.code == 0, replayed.stderr
    assert "replayed 2 message(s)" in replayed.stdout and "0 failed" in replayed.stdout

    stored = await events(js, events_subject("shop"), 2)
    assert [m.data for m in stored] == [json.dumps(SHOP_BODY).encode(), b"\x00not json"]
    ids = [replay_headers(m) for m in stored]
    assert [(original, source) for _, original, source in ids] == [
        ("orig-1", str(seeded.shop_json)),
        ("orig-2", str(seeded.shop_text)),
    ]
    assert ids[0][0].startswith(f"dlq-replay-{seeded.shop_json}-")
    assert ids[1][0].startswith(f"dlq-replay-{seeded.shop_text}-")
    remaining = (await headwater(nats_server, "list", "--json")).json()
    assert [r["seq"] for r in remaining] == [seeded.blog]


async def test_replay_within_the_duplicate_window_keeps_nothing_back(
    nats_server: NatsServerProcess, js: JetStreamContext
) -> None:
    """The original publication is still inside JetStream's duplicate window (two minutes by
    default): a replay under the original Nats-Msg-Id was answered "duplicate", delivered nothing,
    and the dead letter was deleted all the same."""
    original = await js.publish(
        events_subject("shop"), b"{}", stream=EVENTS_STREAM, headers={"Nats-Msg-Id": "orig-1"}
    )
    dead = await js.publish(
        dlq_subject("shop"),
        b"{}",
        stream=DLQ_STREAM,
        headers={"Hw-Error": "x", "Hw-Original-Msg-Id": "orig-1"},
    )

    run = await headwater(nats_server, "replay", "--seq", str(dead.seq), "--yes")
    assert run.code == 0, run.stderr
    assert "replayed 1 message(s)" in run.stdout
    stored = await events(js, events_subject("shop"), 2)  # the original and the replay
    assert len(stored) == 2
    assert stored[0].metadata.sequence.stream == original.seq
    assert replay_headers(stored[1])[1:] == ("orig-1", str(dead.seq))
    assert await count(js, DLQ_STREAM) == 0

    missing = await headwater(nats_server, "replay", "--seq", "999", "--yes")
    assert missing.code == 1 and "999: not in HW_DLQ" in missing.stderr


async def test_replay_reports_a_failure_and_continues(
    nats_server: NatsServerProcess, js: JetStreamContext
) -> None:
    bad = await js.publish(
        dlq_subject("shop"),
        b"{}",
        stream=DLQ_STREAM,
        headers={"Hw-Error": "x", "Hw-Original-Subject": "nowhere.shop"},  # no stream listens there
    )
    good = await js.publish(dlq_subject("shop"), b"{}", stream=DLQ_STREAM, headers={"Hw-Error": "x"})

    run = await headwater(nats_server, "replay", "--project", "shop", "--yes")
    assert run.code == 1
    assert f"failed {bad.seq}:" in run.stderr
    assert "replayed 1 message(s)" in run.stdout and "1 failed" in run.stdout
    remaining = (await headwater(nats_server, "list", "--json")).json()
    assert [r["seq"] for r in remaining] == [bad.seq]
    stored = await events(js, events_subject("shop"), 1)
    assert replay_headers(stored[0])[0].startswith(f"dlq-replay-{good.seq}-")


async def test_dead_letters_replayed_within_the_window_are_all_stored(
    make_stack: Any,
    nats_server: NatsServerProcess,
    http: httpx.AsyncClient,
    js: JetStreamContext,
    project_id: str,
) -> None:
    """End to end: events the edge acknowledged, dead-lettered by the consumer (as a ClickHouse
    failure did) and replayed at once, all land in ClickHouse and leave the DLQ."""
    edge = await make_stack(edge=True, control=True)
    created = await create_project(http, edge, project_id, allowed_origins=[ORIGIN])
    headers = {**basic_auth(created["public_key"]), "Origin": ORIGIN}
    sent = 12
    for i in range(sent):
        response = await http.post(
            f"{edge.edge_url}/v1/track", json=track_event(messageId=f"m-{i}"), headers=headers
        )
        assert response.status_code == 200, response.text

    # What the consumer does to a batch it gives up on: the message goes to HW_DLQ with its
    # original id, and is terminated on the durable consumer so it is never delivered again.
    durable = ConsumerSettings(clickhouse_url="unused").durable_name
    await js.add_consumer(
        EVENTS_STREAM,
        ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, filter_subject="hw.events.>"),
    )
    pull = await js.pull_subscribe_bind(durable, stream=EVENTS_STREAM)
    for message in await pull.fetch(sent, timeout=5):
        await js.publish(
            dlq_subject(project_id),
            message.data,
            stream=DLQ_STREAM,
            headers={
                "Hw-Error": "Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space",
                "Hw-Original-Subject": message.subject,
                "Hw-Original-Msg-Id": (message.headers or {})["Nats-Msg-Id"],
            },
        )
        await message.term()
    await pull.unsubscribe()
    assert await count(js, DLQ_STREAM) == sent

    stack = await make_stack(consumer=True, control=True)
    run = await headwater(nats_server, "replay", "--yes")
    assert run.code == 0, run.stderr
    assert await count(js, DLQ_STREAM) == 0
    stored = await eventually(
        lambda: query_rows(http, stack, project_id, "SELECT count() FROM events FINAL"),
        lambda rows: rows[0][0] >= sent,
        timeout=15,
    )
    assert stored == [[sent]]
