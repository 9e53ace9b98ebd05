"""`headwater streams status|ensure` as an operator runs them: subprocesses against a real nats-server,
awaited as asyncio subprocesses so this test's event loop (and its NATS client) keeps going.
The plan logic and the flag syntax are also tested as plain functions."""

from __future__ import annotations

import asyncio
import re
import signal
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hw_testing import BIN, Run, cli_env, run_cli
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from headwater.consumers.settings import ConsumerSettings
from headwater.core.wire.subjects import DLQ_STREAM, EVENTS_STREAM, events_subject
from headwater.edge.streams import (
    DAY,
    StreamSettings,
    config_changes,
    stream_configs,
    with_changes,
)
from headwater.ops.cli import main
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.options import (
    format_byte_size,
    format_duration,
    parse_byte_size,
    parse_duration,
    stream_settings,
)
from headwater.ops.ports import free_ports
from headwater.ops.streams import STREAM_NAMES, managed_streams, plan_stream, render_plan

pytestmark = pytest.mark.services

EVERY_STREAM = ("HW_EVENTS", "HW_DLQ", "HW_IMPORTS", "HW_AUDIT", "KV_HW_PROJECTS", "KV_HW_IDEMPOTENCY",
                "KV_HW_SESSIONS", "KV_HW_FUNNELS", "KV_HW_IMPORTS")  # fmt: skip


async def headwater(url: str, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Run:
    return await run_cli(
        "streams", *args, "--nats-url", url, env={**cli_env(), **(env or {})}, stdin=stdin or ""
    )


async def existing(js: JetStreamContext) -> set[str]:
    names = set()
    for name in EVERY_STREAM:
        try:
            await js.stream_info(name)
            names.add(name)
        except NotFoundError:
            pass
    return names


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {stream["name"]: stream for stream in document["streams"]}


# -- status ------------------------------------------------------------------------------------------


async def test_status_shows_counts_and_a_consumers_lag_and_ack_pending(
    nats_server: NatsServerProcess, js: JetStreamContext
) -> None:
    for i in range(10):
        await js.publish(events_subject("shop"), b'{"n": %d}' % i, stream=EVENTS_STREAM)
    durable = ConsumerSettings(clickhouse_url="chdb://unused").durable_name
    sub = await js.pull_subscribe(
        "hw.events.>",
        durable=durable,
        stream=EVENTS_STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=300),
    )
    fetched = await sub.fetch(4, timeout=5)
    assert len(fetched) == 4
    await fetched[0].ack_sync()  # 1 acknowledged, 3 delivered and pending, 6 not delivered yet

    streams = by_name((await headwater(nats_server.url, "status", "--json")).json())
    assert list(streams) == list(EVERY_STREAM)
    events = streams[EVENTS_STREAM]
    assert (events["messages"], events["first_seq"], events["last_seq"], events["replicas"]) == (10, 1, 10, 1)
    assert events["bytes"] > 0 and events["first_time"] <= events["last_time"]
    [consumer] = events["consumers"]
    assert consumer["name"] == durable
    assert (consumer["lag"], consumer["ack_pending"], consumer["redelivered"]) == (6, 3, 0)
    assert consumer["last_active"] is not None
    assert streams[DLQ_STREAM]["messages"] == 0 and streams[DLQ_STREAM]["first_time"] is None
    assert streams["HW_AUDIT"] == {"name": "HW_AUDIT", "exists": False}

    table = await headwater(nats_server.url, "status")
    assert table.code == 0, table.stderr
    events_row = next(line.split() for line in table.stdout.splitlines() if line.startswith(EVENTS_STREAM))
    assert events_row[:2] == [EVENTS_STREAM, "10"]
    consumer_row = next(line.split() for line in table.stdout.splitlines() if line.startswith(durable))
    assert consumer_row[:6] == [durable, EVENTS_STREAM, "6", "3", "0", "0"]
    assert re.search(r"^HW_AUDIT +not created", table.stdout, re.MULTILINE)


async def test_status_watch_refreshes_until_ctrl_c(
    nats_server: NatsServerProcess, js: JetStreamContext
) -> None:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "headwater"), "streams", "status", "--nats-url", nats_server.url, "--watch", "0.2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env(),
    )  # fmt: skip
    assert process.stdout is not None
    frames = 0
    while frames < 2:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, "the watch ended before its second frame"
        frames += line.startswith(b"headwater streams status - ")
    process.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr


async def test_unreachable_nats_is_a_clean_error() -> None:
    url = f"nats://127.0.0.1:{free_ports(1)[0]}"
    for args in (("status",), ("status", "--json"), ("ensure", "--yes")):
        run = await headwater(url, *args)
        assert run.code == 1, (args, run.stdout, run.stderr)
        assert f"Error: cannot reach NATS at {url}" in run.stderr
        assert "Traceback" not in run.stderr


# -- ensure ------------------------------------------------------------------------------------------


async def test_ensure_on_an_empty_server_creates_everything(
    nats_server: NatsServerProcess, nats_client: NatsClient
) -> None:
    js = nats_client.jetstream()
    run = await headwater(nats_server.url, "ensure", "--yes")
    assert run.code == 0, run.stderr
    assert "9 to create, 0 to update, 0 unchanged" in run.stdout
    assert "9 applied, 0 failed" in run.stdout
    assert await existing(js) == set(EVERY_STREAM)

    events = (await js.stream_info(EVENTS_STREAM)).config
    assert (events.max_age, events.duplicate_window, events.num_replicas) == (7 * DAY, 120, 1)
    projects = await js.key_value("HW_PROJECTS")  # the bucket works as the control plane uses it
    await projects.put("shop", b"{}")

    again = await headwater(nats_server.url, "ensure", "--yes")
    assert again.code == 0, again.stderr
    assert "0 to create, 0 to update, 9 unchanged" in again.stdout and "nothing to change" in again.stdout


async def test_ensure_shows_a_changed_max_age_asks_and_applies_it(
    nats_server: NatsServerProcess, js: JetStreamContext
) -> None:
    await js.publish(events_subject("shop"), b"{}", stream=EVENTS_STREAM)
    assert (await headwater(nats_server.url, "ensure", "--yes")).code == 0  # audit stream, KV buckets

    declined = await headwater(nats_server.url, "ensure", "--max-age", "12h", stdin="n\n")
    assert declined.code == 1 and "Aborted" in declined.stderr
    assert re.search(r"~ HW_EVENTS: update\n +max_age +7d -> 12h\n= HW_DLQ: no change", declined.stdout)
    assert "0 to create, 2 to update, 7 unchanged" in declined.stdout  # HW_EVENTS and HW_IMPORTS
    assert (await js.stream_info(EVENTS_STREAM)).config.max_age == 7 * DAY

    applied = await headwater(nats_server.url, "ensure", "--max-age", "12h", stdin="y\n")
    assert applied.code == 0, applied.stderr
    assert "HW_EVENTS: updated" in applied.stdout and "2 applied, 0 failed" in applied.stdout
    info = await js.stream_info(EVENTS_STREAM)
    assert info.config.max_age == 12 * 3600
    assert info.config.discard == DiscardPolicy.NEW and info.state.messages == 1  # the rest is kept
    assert (await js.stream_info(DLQ_STREAM)).config.max_age == 30 * DAY

    from_env = await headwater(
        nats_server.url, "ensure", "--yes", env={"HEADWATER_STREAM_DUPLICATE_WINDOW": "5m"}
    )  # no --max-age: back to the default, declaratively
    assert from_env.code == 0, from_env.stderr
    assert re.search(r"max_age +12h -> 7d\n +duplicate_window +2m -> 5m", from_env.stdout)
    config = (await js.stream_info(EVENTS_STREAM)).config
    assert (config.max_age, config.duplicate_window) == (7 * DAY, 300)


async def test_dry_run_changes_nothing(nats_server: NatsServerProcess, nats_client: NatsClient) -> None:
    js = nats_client.jetstream()
    empty = await headwater(nats_server.url, "ensure", "--dry-run")
    assert empty.code == 0, empty.stderr
    assert "+ HW_EVENTS: create" in empty.stdout and "dry run: nothing changed" in empty.stdout
    assert await existing(js) == set()

    assert (await headwater(nats_server.url, "ensure", "--yes")).code == 0
    changed = await headwater(
        nats_server.url, "ensure", "--dry-run", "--max-bytes", "1GiB", "--dlq-max-age", "14d"
    )
    assert changed.code == 0, changed.stderr
    assert re.search(r"max_bytes +unlimited -> 1GiB", changed.stdout)
    assert re.search(r"max_age +30d -> 14d", changed.stdout)
    assert (await js.stream_info(EVENTS_STREAM)).config.max_bytes == -1
    assert (await js.stream_info(DLQ_STREAM)).config.max_age == 30 * DAY


async def test_a_refused_change_is_reported_per_stream(
    nats_server: NatsServerProcess, js: JetStreamContext
) -> None:
    run = await headwater(nats_server.url, "ensure", "--replicas", "3", "--yes")
    assert run.code == 1
    assert "Traceback" not in run.stderr
    refused = "refused: replicas > 1 not supported in non-clustered mode"
    assert f"HW_EVENTS: update {refused}" in run.stderr  # an existing stream
    assert f"HW_AUDIT: create {refused}" in run.stderr  # a missing one
    assert "0 applied, 9 failed" in run.stdout
    assert (await js.stream_info(EVENTS_STREAM)).config.num_replicas == 1


def test_bad_settings_are_usage_errors() -> None:
    """Refused before any connection (the URL leads nowhere)."""
    for args, message in (
        (("--max-age", "1m"), "--max-age (1m) is shorter than --duplicate-window"),
        (("--max-age", "7 days"), "is not a duration"),
        (("--max-bytes", "50G"), "is not a size"),
        (("--replicas", "0"), "--replicas"),
    ):
        url = f"nats://127.0.0.1:{free_ports(1)[0]}"
        result = CliRunner().invoke(main, ["streams", "ensure", "--dry-run", "--nats-url", url, *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)


# -- the plan, as functions --------------------------------------------------------------------------


def as_read_back(config: StreamConfig) -> StreamConfig:
    """`config` as nats-py hands it back from the server: enums as strings, extra server fields."""
    return config.evolve(
        retention="limits",
        storage="file",
        discard="new",
        max_age=float(config.max_age or 0),
        max_consumers=-1,
        max_msgs=-1,
        metadata={"_nats.ver": "2.15.1"},
    )


def test_an_identical_config_read_back_from_the_server_has_no_changes() -> None:
    for config in stream_configs(StreamSettings()):
        assert config_changes(as_read_back(config), config) == []


def test_changes_are_the_managed_fields_that_differ_and_keep_the_rest() -> None:
    live = as_read_back(stream_configs(StreamSettings())[0]).evolve(allow_rollup_hdrs=True, max_msgs=1000)
    desired = stream_configs(StreamSettings(replicas=3, max_age_seconds=12 * 3600))[0]
    changes = config_changes(live, desired)
    assert [(c.field, c.current, c.desired) for c in changes] == [
        ("num_replicas", 1, 3),
        ("max_age", 7 * DAY, 12 * 3600),
    ]
    updated = with_changes(live, changes)
    assert (updated.num_replicas, updated.max_age) == (3, 12 * 3600)
    assert (updated.allow_rollup_hdrs, updated.max_msgs, updated.metadata) == (True, 1000, live.metadata)
    assert [c.field for c in config_changes(live, live.evolve(storage=StorageType.MEMORY))] == ["storage"]
    assert config_changes(live, live.evolve(description="other"), fields=("num_replicas",)) == []


def test_the_plan_names_streams_to_create_and_fields_to_change() -> None:
    events, dlq, _imports, audit, *_ = managed_streams(StreamSettings(max_age_seconds=3600))
    live_events = as_read_back(stream_configs(StreamSettings())[0])
    live_audit = StreamConfig(name="HW_AUDIT", num_replicas=1, max_age=400 * DAY)
    plans = [plan_stream(events, live_events), plan_stream(dlq, None), plan_stream(audit, live_audit)]
    assert [p.action for p in plans] == ["update", "create", "none"]
    text = render_plan(plans)
    assert "~ HW_EVENTS: update\n      max_age            7d -> 1h\n+ HW_DLQ: create\n" in text
    assert "      max_bytes          unlimited\n" in text and "= HW_AUDIT: no change" in text
    assert text.endswith("1 to create, 1 to update, 1 unchanged")
    assert STREAM_NAMES == EVERY_STREAM


def test_durations_and_sizes_read_and_print_like_the_flags() -> None:
    assert parse_duration("7d") == 7 * DAY
    assert parse_duration("1h30m") == 5400 == parse_duration("5400")
    assert parse_duration("2w") == 14 * DAY and parse_duration("1.5s") == 1.5
    for text in ("", "7 days", "-1d", "1y", "inf"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(text)
    for seconds, text in ((7 * DAY, "7d"), (5400, "1h30m"), (120, "2m"), (90.5, "1m30.5s"), (0, "0s")):
        assert format_duration(seconds) == text and parse_duration(text) == seconds

    assert parse_byte_size("50GiB") == 50 << 30 and parse_byte_size("500mb") == 500_000_000
    assert parse_byte_size("-1") == -1 == parse_byte_size("unlimited") and parse_byte_size("1024") == 1024
    for text in ("50G", "1.5 XB", "-2", "lots"):
        with pytest.raises(ValueError, match="not a size"):
            parse_byte_size(text)
    for size, text in ((50 << 30, "50GiB"), (500_000_000, "500MB"), (1234, "1234B"), (-1, "unlimited")):
        assert format_byte_size(size) == text and parse_byte_size(text) == size


def test_stream_settings_refuse_what_jetstream_would() -> None:
    settings = stream_settings(3, 12 * 3600, 50 << 30, 300, 14 * DAY)
    assert settings == StreamSettings(3, 12 * 3600, 50 << 30, 300, 14 * DAY)
    assert stream_settings(1, 0, -1, 120, 0).max_age_seconds == 0  # 0: no age limit
    for args in ((1, 60, -1, 120, 30 * DAY), (1, 7 * DAY, -1, 120, 60), (1, 7 * DAY, 0, 120, DAY)):
        with pytest.raises(click.UsageError):
            stream_settings(*args)
