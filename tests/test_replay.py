"""Replay against real NATS and the embedded ClickHouse: a time window of one project comes back as
the same rows (enrichment re-derived with today's rules), an interrupted replay resumes with no
duplicates, the live consumer is not disturbed, and the CLI counts and exports."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from hw_testing import BIN, cli_env, eventually, run_cli, track_event
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from headwater.consumers.enrich import Enricher
from headwater.consumers.processing import InlineProcessor
from headwater.consumers.replay import ClickHouseSink, Replay, ReplayError, ReplayWindow
from headwater.consumers.rows import Row
from headwater.consumers.runner import EventConsumer
from headwater.consumers.settings import ConsumerSettings
from headwater.consumers.writer import ClickHouseWriter
from headwater.core.projects.project import utc_now_iso
from headwater.core.projects.settings import Anonymisation, ProjectSettings
from headwater.core.projects.tombstones import ensure_tombstones_bucket, follow_tombstones, write_tombstones
from headwater.core.wire.envelope import Envelope
from headwater.core.wire.subjects import EVENTS_STREAM, MSG_ID_HEADER, events_subject
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.replay import TombstonesLost, live_tombstones
from headwater.privacy.tombstones import tombstone_digest

pytestmark = pytest.mark.services

BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


async def publish(
    js: JetStreamContext, project_id: str, prefix: str, requests: int, per_request: int
) -> list[str]:
    """`requests` envelopes of `per_request` events; returns the messageIds."""
    ids = []
    for r in range(requests):
        message_ids = [f"{prefix}-{r}-{e}" for e in range(per_request)]
        events = [{**track_event(messageId=m), "type": "track"} for m in message_ids]
        envelope = Envelope(
            project_id, f"{prefix}-{r}", utc_now_iso(), events, ip="81.2.69.142", user_agent=BROWSER_UA
        )
        await js.publish(
            events_subject(project_id), envelope.encode(), headers={MSG_ID_HEADER: f"{prefix}-{r}"}
        )
        ids += message_ids
    return ids


def rows(client: Client, project_id: str, final: bool = True) -> list[tuple[object, ...]]:
    return client.query(
        f"SELECT message_id, browser, os, country_code, ip FROM hw_{project_id}.events "
        f"{'FINAL' if final else ''} ORDER BY message_id"
    ).result_rows


async def consume_everything(
    nats: NatsClient, client: Client, clickhouse_url: str, project_id: str, count: int
) -> None:
    settings = ConsumerSettings(clickhouse_url=clickhouse_url, flush_interval_seconds=0.1)
    consumer = EventConsumer(nats, ClickHouseWriter(client), settings, InlineProcessor(Enricher(None)))
    await consumer.start()
    try:

        async def landed() -> int:
            return len(rows(client, project_id))

        await eventually(landed, lambda n: n == count, timeout=20)
    finally:
        await consumer.stop()


async def three_windows(js: JetStreamContext, project_id: str) -> tuple[list[str], datetime, datetime]:
    """Events before, inside and after a time window; returns the inside ids and the window."""
    await publish(js, project_id, "before", 3, 2)
    await asyncio.sleep(0.05)
    since = datetime.now(UTC)
    inside = await publish(js, project_id, "inside", 12, 5)
    until = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await publish(js, project_id, "after", 3, 2)
    return inside, since, until


async def test_a_time_window_replayed_into_an_emptied_table_comes_back_the_same(
    nats_client: NatsClient, js: JetStreamContext, clickhouse: Client, clickhouse_url: str, project_id: str
) -> None:
    inside, since, until = await three_windows(js, project_id)
    await consume_everything(nats_client, clickhouse, clickhouse_url, project_id, 6 + 60 + 6)
    before = [r for r in rows(clickhouse, project_id) if str(r[0]).startswith("inside")]
    assert [r[0] for r in before] == sorted(inside)
    clickhouse.command(f"TRUNCATE TABLE hw_{project_id}.events")
    durable_before = await js.consumer_info(EVENTS_STREAM, "hw-clickhouse")

    replay = Replay(
        nats_client,
        ReplayWindow(project_id, since=since, until=until),
        ClickHouseSink(clickhouse),
        Enricher(None),
        settings_of=lambda _p: ProjectSettings(),
    )
    progress = await replay.run()

    assert (progress.messages, progress.events, progress.skipped) == (12, 60, 0)
    assert rows(clickhouse, project_id) == before  # same messageIds, same enrichment
    assert before[0][1] == "Chrome" and before[0][4] == "81.2.69.0"  # enriched, IP truncated
    # The live durable consumer was not touched, and the replay's own consumer is gone.
    durable_after = await js.consumer_info(EVENTS_STREAM, "hw-clickhouse")
    assert durable_after.delivered.stream_seq == durable_before.delivered.stream_seq
    assert durable_after.num_pending == durable_before.num_pending == 0
    assert [c.name for c in await js.consumers_info(EVENTS_STREAM)] == ["hw-clickhouse"]


async def test_a_replay_applies_todays_rules(
    nats_client: NatsClient, js: JetStreamContext, clickhouse: Client, project_id: str
) -> None:
    await publish(js, project_id, "r", 2, 3)
    drop_ip = ProjectSettings(anonymisation=Anonymisation(ip="drop"))
    replay = Replay(
        nats_client, ReplayWindow(project_id), ClickHouseSink(clickhouse), Enricher(None), lambda _p: drop_ip
    )
    await replay.run()
    assert {r[4] for r in rows(clickhouse, project_id)} == {""}  # the project now drops addresses


async def test_a_second_replay_of_the_same_window_stores_its_new_values(
    nats_client: NatsClient, js: JetStreamContext, clickhouse: Client, project_id: str
) -> None:
    await publish(js, project_id, "r", 2, 3)

    def replay(settings: ProjectSettings) -> Replay:
        window = ReplayWindow(project_id)
        return Replay(nats_client, window, ClickHouseSink(clickhouse), Enricher(None), lambda _p: settings)

    await replay(ProjectSettings()).run()
    assert {r[4] for r in rows(clickhouse, project_id)} == {"81.2.69.0"}
    # The rules changed (the documented reason to replay): the same window again re-derives them.
    await replay(ProjectSettings(anonymisation=Anonymisation(ip="drop"))).run()
    assert {r[4] for r in rows(clickhouse, project_id)} == {""}
    assert len(rows(clickhouse, project_id)) == 6


class CrashingSink(ClickHouseSink):
    """Inserts, then dies before the checkpoint is written, on its `crash_on`-th batch — the worst
    moment for a replay to be interrupted. Records the stream sequences of each batch."""

    def __init__(self, client: Client, crash_on: int | None = None) -> None:
        super().__init__(client)
        self.batches: list[list[int]] = []
        self.run_ids: set[str] = set()
        self.crash_on = crash_on

    def write(self, rows: dict[str, list[Row]], sequences: list[int], run_id: str) -> None:
        super().write(rows, sequences, run_id)
        self.batches.append(list(sequences))
        self.run_ids.add(run_id)
        if len(self.batches) == self.crash_on:
            raise RuntimeError("killed (injected)")


async def test_an_interrupted_replay_resumes_and_lands_each_event_once(
    nats_client: NatsClient, js: JetStreamContext, clickhouse: Client, project_id: str, tmp_path: Path
) -> None:
    ids = await publish(js, project_id, "m", 30, 4)
    checkpoint = tmp_path / "replay.json"
    window = ReplayWindow(project_id)

    def replay(sink: ClickHouseSink) -> Replay:
        return Replay(
            nats_client, window, sink, Enricher(None), lambda _p: ProjectSettings(), checkpoint, batch_rows=20
        )

    interrupted = CrashingSink(clickhouse, crash_on=3)
    with pytest.raises(RuntimeError, match="injected"):
        await replay(interrupted).run()
    saved = json.loads(checkpoint.read_text())
    assert saved["events"] == 40  # two batches were checkpointed; the third landed, unrecorded
    assert saved["next_seq"] == interrupted.batches[2][0]
    assert saved["run_id"]  # the run's identity, kept for the resumed run's tokens

    resumed = CrashingSink(clickhouse)
    progress = await replay(resumed).run()

    assert progress.resumed_from == saved["next_seq"]
    assert progress.events == 120
    # The third batch is formed again exactly (same sequences, so the same de-duplication token:
    # ClickHouse drops it), and the rest follows.
    assert resumed.batches[0] == interrupted.batches[2]
    assert resumed.run_ids == interrupted.run_ids == {saved["run_id"]}
    assert sorted(seq for batch in interrupted.batches[:2] + resumed.batches for seq in batch) == list(
        range(interrupted.batches[0][0], resumed.batches[-1][-1] + 1)
    )
    landed = rows(clickhouse, project_id, final=False)
    assert sorted(str(r[0]) for r in landed) == sorted(ids)  # each event once, even before merges
    assert not checkpoint.exists()  # finished


async def test_a_checkpoint_of_another_replay_is_refused(
    nats_client: NatsClient, js: JetStreamContext, clickhouse: Client, project_id: str, tmp_path: Path
) -> None:
    await publish(js, project_id, "m", 5, 1)
    checkpoint = tmp_path / "replay.json"
    first = Replay(
        nats_client, ReplayWindow(project_id), CrashingSink(clickhouse, 2), Enricher(None),
        lambda _p: ProjectSettings(), checkpoint, batch_rows=2,
    )  # fmt: skip
    with pytest.raises(RuntimeError):
        await first.run()
    other = Replay(
        nats_client, ReplayWindow(project_id, from_seq=3), ClickHouseSink(clickhouse), Enricher(None),
        lambda _p: ProjectSettings(), checkpoint, batch_rows=2,
    )  # fmt: skip
    with pytest.raises(ReplayError, match="another replay"):
        await other.run()


def headwater(server: NatsServerProcess, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "headwater"), "replay", "--nats-url", server.url, *args],
        capture_output=True, text=True, env=cli_env(), timeout=60, cwd=cwd, stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def test_the_cli_counts_exports_and_validates(
    nats_server: NatsServerProcess, js: JetStreamContext, project_id: str, tmp_path: Path
) -> None:
    ids = await publish(js, project_id, "c", 4, 3)
    await publish(js, "someone_else", "x", 2, 1)

    counted = await asyncio.to_thread(
        headwater, nats_server, "--project", project_id, "--dry-run", cwd=tmp_path
    )
    assert counted.returncode == 0, counted.stderr
    assert "counted: 4 messages, 12 events" in counted.stdout

    out = tmp_path / "events.jsonl"
    exported = await asyncio.to_thread(
        headwater, nats_server, "--project", project_id, "--to", "jsonl", "--output", str(out), "--quiet",
        "--from-seq", "2", cwd=tmp_path,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["message_id"] for r in records) == sorted(ids[3:])  # from the second message on
    assert {r["project"] for r in records} == {project_id}
    assert records[0]["browser"] == "Chrome" and records[0]["ip"] == "81.2.69.0"
    leftovers = await asyncio.to_thread(lambda: list(tmp_path.glob(".headwater-replay-*")))
    assert leftovers == []  # finished: no checkpoint left

    everything = await asyncio.to_thread(headwater, nats_server, "--all-projects", "--dry-run", cwd=tmp_path)
    assert "counted: 6 messages, 14 events" in everything.stdout

    both = await asyncio.to_thread(
        headwater, nats_server, "--project", project_id, "--all-projects", cwd=tmp_path
    )
    assert both.returncode == 2 and "--all-projects" in both.stderr
    no_output = await asyncio.to_thread(
        headwater, nats_server, "--project", project_id, "--to", "jsonl", cwd=tmp_path
    )
    assert no_output.returncode == 2 and "--output" in no_output.stderr
    bad_time = await asyncio.to_thread(
        headwater, nats_server, "--project", project_id, "--since", "yesterday", "--dry-run", cwd=tmp_path
    )
    assert bad_time.returncode == 2 and "ISO-8601" in bad_time.stderr


async def test_a_replay_into_embedded_data_another_process_holds_says_what_to_do(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path / 'clickhouse'}"
    hold = (
        f"import sys\nfrom headwater.control.clickhouse import connect\nclient = connect({url!r})\n"
        "print('open', flush=True)\nsys.stdin.read()"
    )
    holder = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-c", hold],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.to_thread(holder.stdout.readline) == "open\n"
        result = await run_cli(
            "replay", "--project", "demo", "--nats-url", "nats://127.0.0.1:1", "--clickhouse-url", url
        )
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
    assert result.code != 0
    assert "stop `headwater up`" in result.stderr, result.stderr
    assert "--clickhouse-url" in result.stderr


async def test_a_deletion_during_a_replay_counts_from_then_on(
    nats_client: NatsClient, js: JetStreamContext, clickhouse: Client, project_id: str
) -> None:
    """The replay asks for a project's tombstones per envelope (`headwater replay` answers from a
    live registry): a person deleted while it runs is not written from then on."""
    await publish(js, project_id, "d", 12, 5)  # every event of user-1
    deleted = frozenset({tombstone_digest(project_id, "user_id", "user-1")})
    asked: list[str] = []

    def tombstones_of(project: str) -> frozenset[bytes]:
        asked.append(project)
        return deleted if len(asked) > 6 else frozenset()  # the deletion lands after 6 envelopes

    replay = Replay(
        nats_client,
        ReplayWindow(project_id),
        ClickHouseSink(clickhouse),
        Enricher(None),
        lambda _p: ProjectSettings(),
        tombstones_of=tombstones_of,
    )
    progress = await replay.run()
    assert (progress.events, progress.suppressed) == (30, 30)
    assert [r[0] for r in rows(clickhouse, project_id)] == sorted(
        f"d-{r}-{e}" for r in range(6) for e in range(5)
    )


async def test_the_replay_command_follows_tombstones_written_while_it_runs(
    js: JetStreamContext, project_id: str
) -> None:
    kv = await ensure_tombstones_bucket(js, 1)
    registry = await follow_tombstones(js)
    assert registry is not None
    try:
        tombstones_of = live_tombstones(registry)
        assert tombstones_of(project_id) == frozenset()
        await write_tombstones(kv, project_id, [("user_id", "user-1")], "job-1")

        async def digests() -> frozenset[bytes]:
            return tombstones_of(project_id)

        await eventually(digests, lambda found: found == {tombstone_digest(project_id, "user_id", "user-1")})
        registry.failure = ConnectionError("watcher gone")  # what its watcher leaves when it fails
        with pytest.raises(TombstonesLost, match="run the same replay again"):
            tombstones_of(project_id)
    finally:
        await registry.stop()


async def test_without_a_tombstones_bucket_nothing_is_deleted(js: JetStreamContext) -> None:
    assert await follow_tombstones(js) is None
    assert live_tombstones(None)("any") == frozenset()
