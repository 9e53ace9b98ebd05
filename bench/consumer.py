"""Consumer benchmark: a pre-filled stream through decode, enrichment and batching into ClickHouse,
against a raw clickhouse-connect insert of the same rows on the same engine — in one run.

    python bench/consumer.py                  # 1,000,000 events; updates docs/benchmarks.md
    python bench/consumer.py --events 200000 --no-doc
    python bench/consumer.py --quick          # 20,000 events, checks only (exit 1 on any loss)

The stream is filled as the edge writes it (`Envelope` version 2, a batch's `sentAt` on it,
LZ4-framed above 4 KB): half single-event requests, half batches of 2-50 events, page/track/identify
events, ~3,000 distinct user agents drawn from a Zipf distribution, IPv4 and IPv6 client addresses,
four projects.

Each measurement runs in its own child process on its own embedded ClickHouse directory (chdb
allows one process per directory): `raw` reads the stream (untimed), builds the rows with the
consumer's own code (untimed) and times only `client.insert` of 10,000-row batches; `consume` runs
the real `EventConsumer` with default settings from the first message to the last row written,
sampling its RSS and the engine's own tracked memory, then checks every event is there once.
A third, in-process measurement compares the pull alone (pipelined vs nats-py `fetch`, ack only).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from docsection import DOC, replace_section
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from edge import cpu_seconds as cpu_seconds_of
from headwater.consumers import processing
from headwater.consumers.enrich import Enricher, GeoLookup, default_geo_database
from headwater.consumers.enrich.bots import BotFilter
from headwater.consumers.processing import InlineProcessor, Processor, WorkerPool, start_processor
from headwater.consumers.pull import PipelinedPull
from headwater.consumers.rows import COLUMNS, envelope_rows
from headwater.consumers.runner import EventConsumer
from headwater.consumers.settings import ConsumerSettings
from headwater.consumers.wire import decode_envelope
from headwater.consumers.writer import ClickHouseWriter
from headwater.control.clickhouse import connect
from headwater.core.migrations import apply_migrations
from headwater.core.projects.project import database_name, iso
from headwater.core.projects.settings import Sessions
from headwater.core.wire.envelope import Envelope, pack
from headwater.core.wire.subjects import EVENTS_STREAM, EVENTS_SUBJECTS, MSG_ID_HEADER, events_subject
from headwater.edge.streams import StreamSettings, ensure_streams
from headwater.ops.natsconn import connect_nats
from headwater.ops.natsserver import NatsServerProcess
from headwater.sessionizer.runner import Sessionizer
from headwater.sessionizer.settings import DEFAULT_MAX_BUSY_FRACTION, SessionizerSettings
from headwater.sessionizer.watermarks import Watermarks, ensure_sessions_bucket

BEGIN, END = (
    "<!-- bench/consumer.py: generated section begins -->",
    "<!-- bench/consumer.py: generated section ends -->",
)
PROJECTS = ("shop", "docs", "app", "blog")
RAW_BATCH_ROWS = 10_000  # the consumer's default max_batch_rows
SESSIONIZER_SETTLE_SECONDS = 1.0  # bench/sessions.py's sessionizer beside the consumer

# ---------------------------------------------------------------------------------------------
# The workload


def user_agents(rng: random.Random, count: int) -> list[str]:
    """`count` distinct, realistic user agents; index 0 is the most common (Zipf rank order)."""
    android_models = ["SM-G991B", "SM-A536B", "Pixel 7", "Pixel 8 Pro", "M2101K6G", "CPH2411", "SM-S918B"]
    makers: list[Callable[[], str]] = [
        lambda: (
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{rng.randint(100, 131)}.0.{rng.randint(4000, 6800)}.{rng.randint(0, 200)} Safari/537.36"
        ),
        lambda: (
            f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{rng.randint(100, 131)}.0.{rng.randint(4000, 6800)}.{rng.randint(0, 200)} Safari/537.36"
        ),
        lambda: (
            f"Mozilla/5.0 (Linux; Android {rng.randint(10, 14)}; {rng.choice(android_models)}) "
            f"AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{rng.randint(100, 131)}.0."
            f"{rng.randint(4000, 6800)}.{rng.randint(0, 200)} Mobile Safari/537.36"
        ),
        lambda: (
            lambda v: (
                f"Mozilla/5.0 (iPhone; CPU iPhone OS {v[0]}_{v[1]} like Mac OS X) AppleWebKit/605.1.15 "
                f"(KHTML, like Gecko) Version/{v[0]}.{v[1]} Mobile/15E148 Safari/604.1"
            )
        )((rng.randint(14, 18), rng.randint(0, 7))),
        lambda: (
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{(v := rng.randint(100, 133))}.0) "
            f"Gecko/20100101 Firefox/{v}.0"
        ),
        lambda: (
            f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            f"Version/{rng.randint(14, 18)}.{rng.randint(0, 6)} Safari/605.1.15"
        ),
        lambda: (
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{(v := rng.randint(100, 131))}.0.0.0 Safari/537.36 "
            f"Edg/{v}.0.{rng.randint(1000, 2900)}.{rng.randint(0, 99)}"
        ),
        lambda: rng.choice(
            [
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
                "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
                f"curl/8.{rng.randint(0, 11)}.{rng.randint(0, 3)}",
                f"python-requests/2.{rng.randint(20, 32)}.{rng.randint(0, 3)}",
            ]
        ),
    ]
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen[rng.choice(makers)()] = None
    return list(seen)


def client_addresses(rng: random.Random, count: int) -> list[str]:
    """Public IPv4 (75%) and IPv6 (25%) addresses from ranges the GeoIP data knows."""
    v6_prefixes = [
        "2a00:1450:4001",
        "2600:1f18:6a5",
        "2a02:c7f:d85e",
        "2001:4860:4801",
        "2a01:4f8:c17",
        "2400:cb00:2049",
    ]
    addresses = []
    for _ in range(count):
        if rng.random() < 0.75:
            first = rng.choice([8, 24, 31, 45, 62, 77, 81, 89, 93, 104, 151, 176, 185, 188, 203, 212])
            addresses.append(f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
        else:
            suffix = ":".join(f"{rng.randint(0, 0xFFFF):x}" for _ in range(5))
            addresses.append(f"{rng.choice(v6_prefixes)}:{suffix}")
    return addresses


PATHS = [
    "/",
    "/pricing",
    "/docs/getting-started",
    "/blog/why-events",
    "/products/merino",
    "/cart",
    "/checkout",
    "/account",
]
REFERRERS = ["https://www.google.com/", "https://news.ycombinator.com/", "https://t.co/abc", "", ""]
TRACKED = ["Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Signed Up", "Search"]


def event(rng: random.Random, anonymous_id: str, user_id: str | None, sent_at: datetime) -> dict[str, Any]:
    path = rng.choice(PATHS)
    query = "?utm_source=newsletter&utm_medium=email&utm_campaign=nov" if rng.random() < 0.2 else ""
    page = {
        "path": path,
        "url": f"https://www.example.com{path}{query}",
        "referrer": rng.choice(REFERRERS),
        "title": path.strip("/").replace("-", " ").title() or "Home",
        "search": query,
    }
    common: dict[str, Any] = {
        "anonymousId": anonymous_id,
        "messageId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "timestamp": iso(sent_at - timedelta(milliseconds=rng.randint(0, 5000))),
        "context": {
            "library": {"name": "headwater.js", "version": "1.0.0"},
            "locale": "en-US",
            "page": page,
            "screen": {"width": 1920, "height": 1080},
        },
    }
    if user_id:
        common["userId"] = user_id
    kind = rng.random()
    if kind < 0.5:
        return {**common, "type": "page", "name": page["title"], "properties": dict(page)}
    if kind < 0.9:
        properties = {
            "product_id": f"P-{rng.randint(1, 5000)}",
            "price": round(rng.uniform(5, 300), 2),
            "currency": "EUR",
        }
        return {**common, "type": "track", "event": rng.choice(TRACKED), "properties": properties}
    traits = {
        "email": f"user{rng.randint(1, 10**6)}@example.com",
        "plan": rng.choice(["free", "pro", "team"]),
    }
    return {**common, "type": "identify", "userId": user_id or f"u{rng.randint(1, 10**6)}", "traits": traits}


def workload(seed: int, events: int, received: datetime | None = None) -> list[tuple[str, str, bytes]]:
    """(project, request id, envelope) per request, `events` events in all, received at `received`
    (default a fixed time, for a reproducible workload; bench/sessions.py gives a recent one, as
    a sessionizer counts events a week old as too late)."""
    rng = random.Random(seed)  # noqa: S311 -- a reproducible workload, not a secret
    agents = user_agents(rng, 3000)
    cumulative, total = [], 0.0
    for rank in range(len(agents)):
        total += 1 / (rank + 1) ** 1.1
        cumulative.append(total)
    addresses = client_addresses(rng, 50_000)
    received = received or datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
    out, produced, n = [], 0, 0
    while produced < events:
        count = 1 if rng.random() < 0.5 else rng.randint(2, 50)
        count = min(count, events - produced)
        received += timedelta(milliseconds=rng.randint(0, 3))
        sent_at = received - timedelta(milliseconds=rng.randint(20, 400))
        anonymous_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        user_id = f"u{rng.randint(1, 10**6)}" if rng.random() < 0.3 else None
        batch = [event(rng, anonymous_id, user_id, sent_at) for _ in range(count)]
        if count == 1:  # a single-event request carries its own sentAt; a batch's is on the envelope
            batch[0]["sentAt"] = iso(sent_at)
        request_id = f"bench-{n:08d}"
        project = PROJECTS[n % len(PROJECTS)]
        envelope = Envelope(
            project=project,
            request_id=request_id,
            received_at=iso(received),
            sent_at=iso(sent_at) if count > 1 else None,
            events=batch,
            ip=addresses[rng.randrange(len(addresses))],
            user_agent=rng.choices(agents, cum_weights=cumulative)[0],
            origin="https://www.example.com",
        )
        out.append((project, request_id, pack(envelope.encode())))  # as the edge publishes it
        produced += count
        n += 1
    return out


async def fill(nats: NatsClient, requests: list[tuple[str, str, bytes]]) -> None:
    js = nats.jetstream()
    await ensure_streams(js, StreamSettings())
    window = []
    for project, request_id, data in requests:
        window.append(
            await js.publish_async(events_subject(project), data, headers={MSG_ID_HEADER: request_id})
        )
        if len(window) >= 1000:
            await asyncio.gather(*window)
            window.clear()
    await asyncio.gather(*window)


# ---------------------------------------------------------------------------------------------
# Measurements


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def engine_memory(client: Any) -> int:
    """What the embedded ClickHouse itself tracks as allocated (its share of the process RSS)."""
    rows = client.query("SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'").result_rows
    return int(rows[0][0]) if rows else 0


def migrate(clickhouse_url: str) -> Any:
    client = connect(clickhouse_url)
    for project in PROJECTS:
        apply_migrations(client, database_name(project))
    return client


def landed(client: Any) -> tuple[int, int]:
    total = unique = 0
    for project in PROJECTS:
        [(count, distinct)] = client.query(
            f"SELECT count(), uniqExact(message_id) FROM `{database_name(project)}`.events FINAL"
        ).result_rows
        total, unique = total + int(count), unique + int(distinct)
    return total, unique


# bench/privacy.py's arms: the product's defaults (the bot filter on, no rules); neither the bot
# filter nor rules ("off", the consumer as it was before either existed); ten anonymisation rules
# (bench/anonymisation.py's TEN_RULES) with the bot filter, a 100-network blocklist and an
# operator's file of 5,000 data-centre ranges ("rules").
PrivacyArm = Literal["default", "off", "rules"]
PRIVACY_ARMS: tuple[PrivacyArm, ...] = ("default", "off", "rules")


class NoBotFilter(BotFilter):
    """A bot filter that finds no bot, and costs nothing: the consumer without the filter."""

    def client_reason(self, *_args: Any) -> None:
        return None

    def referrer_reason(self, *_args: Any) -> None:
        return None


def _start_worker_without_bot_filter(*initargs: Any) -> None:
    processing._start_worker(*initargs)
    assert processing._worker_enricher is not None
    processing._worker_enricher.bots = NoBotFilter()


class PoolWithoutBotFilter(WorkerPool):
    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker_without_bot_filter,
            initargs=(self._geoip_database, os.getpid(), self._bot_files),
        )


def processor_without_bot_filter(settings: ConsumerSettings) -> Processor:
    if settings.worker_count() == 0:
        return InlineProcessor(Enricher(GeoLookup(settings.geoip_path()), bots=NoBotFilter()))
    return PoolWithoutBotFilter(settings.worker_count(), settings.geoip_path())


def datacentre_file(ranges_count: int, seed: int = 11) -> str:
    """`ranges_count` random IPv4 /24s and IPv6 /40s, one a line (the operator's file format)."""
    rng = random.Random(seed)  # noqa: S311 -- a reproducible file, not a secret
    lines = ["# generated by bench/consumer.py"]
    for i in range(ranges_count):
        if i % 4:
            lines.append(f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.0/24")
        else:
            lines.append(f"2a0{rng.randint(0, 9)}:{rng.randint(0, 0xFFFF):x}:{rng.randint(0, 0xFF):x}00::/40")
    return "\n".join(lines) + "\n"


def blocklist(count: int, seed: int = 13) -> list[str]:
    rng = random.Random(seed)  # noqa: S311
    return [f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.0/24" for _ in range(count)]


async def child_raw(nats_url: str, clickhouse_url: str, events: int) -> dict[str, Any]:
    """Time only `client.insert` of the consumer's own rows, in 10,000-row batches per project."""
    nats = await connect_nats(nats_url, "bench-raw")
    client = migrate(clickhouse_url)
    engine_idle, rss_idle = engine_memory(client), rss_bytes()
    enricher = Enricher(GeoLookup(default_geo_database()))
    js = nats.jetstream()
    config = ConsumerConfig(
        durable_name="bench-raw", filter_subject=EVENTS_SUBJECTS, ack_policy=AckPolicy.NONE
    )
    await js.add_consumer(EVENTS_STREAM, config)
    pull = PipelinedPull(nats, EVENTS_STREAM, "bench-raw")
    await pull.start()
    pending: dict[str, list[tuple[Any, ...]]] = {p: [] for p in PROJECTS}
    insert_seconds, seen, batches = 0.0, 0, 0
    while seen < events:
        for message in await pull.take(500, timeout=5):
            envelope = decode_envelope(message.data)
            rows = envelope_rows(envelope, enricher)
            seen += len(rows)
            pending[envelope.project].extend(rows)
        for project, rows in pending.items():
            if len(rows) >= RAW_BATCH_ROWS or (seen >= events and rows):
                started = time.perf_counter()
                client.insert(f"`{database_name(project)}`.events", rows, column_names=COLUMNS)
                insert_seconds += time.perf_counter() - started
                batches += 1
                rows.clear()
    await pull.stop()
    await nats.close()
    total, unique = landed(client)
    return {
        "rows": seen,
        "seconds": insert_seconds,
        "batches": batches,
        "landed": total,
        "unique": unique,
        "engine_idle": engine_idle,
        "rss_idle": rss_idle,
    }


async def child_consume(
    nats_url: str,
    clickhouse_url: str,
    events: int,
    workers: int | None,
    sessionized: bool = False,
    max_busy: float = DEFAULT_MAX_BUSY_FRACTION,
    privacy: PrivacyArm = "default",
) -> dict[str, Any]:
    """The real consumer, default settings, from the first message until the last row is written;
    `sessionized`: with the sessionizer role running beside it on the same engine (bench/sessions.py),
    busy at most `max_busy` of the time; `privacy`: which of bench/privacy.py's arms (PRIVACY_ARMS)."""
    nats = await connect_nats(nats_url, "bench-consume")
    client = migrate(clickhouse_url)
    durable = f"bench-consume-{os.getpid()}"  # a fresh durable each run: runs can share a stream
    settings = ConsumerSettings(clickhouse_url=clickhouse_url, durable_name=durable, workers=workers)
    settings_of, hash_key_of = None, None
    if privacy == "rules":
        from anonymisation import HASH_KEY, ten_rule_settings  # (it imports this module)

        ranges = Path(clickhouse_url.removeprefix("chdb://")).parent / "datacentre.csv"
        ranges.parent.mkdir(parents=True, exist_ok=True)
        ranges.write_text(datacentre_file(ranges_count=5_000))
        settings = dataclasses.replace(settings, datacentre_ranges=str(ranges))
        project_settings = ten_rule_settings().merged({"bots": {"ip_blocklist": blocklist(100)}})
        settings_of, hash_key_of = (lambda _project: project_settings), (lambda _project: HASH_KEY)
    processor = (
        processor_without_bot_filter(settings) if privacy == "off" else start_processor(settings, hash_key_of)
    )
    await processor.warm_up()  # starting the worker processes is start-up, not throughput
    pids = processor.pids() if isinstance(processor, WorkerPool) else []
    consumer = EventConsumer(nats, ClickHouseWriter(client), settings, processor, settings_of)
    # (seconds, rows written, RSS, engine memory, RSS of each worker)
    samples: list[tuple[float, int, int, int, list[int]]] = []

    def sample(seconds: float) -> None:
        workers_rss = [rss_bytes(pid) for pid in pids]
        samples.append((seconds, consumer.rows_written, rss_bytes(), engine_memory(client), workers_rss))

    beside = await sessionizer_beside(nats, clickhouse_url, max_busy) if sessionized else None
    if beside is not None:
        await beside.start()
    sample(0.0)
    cpu_before, started = cpu_seconds(), time.perf_counter()
    workers_cpu_before = sum(cpu_seconds_of(pid) for pid in pids)
    await consumer.start()
    next_sample = started + 1.0
    while consumer.rows_written < events:
        await asyncio.sleep(0.02)
        if consumer.failure is not None:
            raise consumer.failure
        if time.perf_counter() >= next_sample:
            next_sample += 1.0
            sample(time.perf_counter() - started)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    workers_cpu = sum(cpu_seconds_of(pid) for pid in pids) - workers_cpu_before
    sample(seconds)
    rounds, sessionizer_error, lag = 0, None, 0.0
    if beside is not None:
        lag = await sessions_lag(nats, seconds)
        await beside.stop()
        rounds, sessionizer_error = beside.rounds, beside.last_error
        # Untimed: one more round once the last rows have settled, so that every event is
        # sessionized and the count below shows the sessionizer did its work.
        await asyncio.sleep(SESSIONIZER_SETTLE_SECONDS + 0.1)
        await (await sessionizer_beside(nats, clickhouse_url)).run_round()
    await consumer.stop()
    await processor.close()
    await nats.close()
    total, unique = landed(client)
    return {
        "sessionizer_rounds": rounds,
        "sessionizer_error": sessionizer_error,
        "sessions_lag_seconds": lag,
        "sessions": sessions_stored(client) if sessionized else 0,
        "rows": consumer.rows_written,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "workers": len(pids),
        "workers_cpu_seconds": workers_cpu,
        "landed": total,
        "unique": unique,
        "samples": samples,
        "retries": consumer.retries,
        "dead_lettered": consumer.dead_lettered,
    }


async def sessionizer_beside(
    nats: NatsClient, clickhouse_url: str, max_busy: float = DEFAULT_MAX_BUSY_FRACTION
) -> Sessionizer:
    """The sessionizer role over the benchmark's projects, on its own client of the same engine,
    cycling every 2 s (or as its busy limit lets it) on what was inserted up to 1 s ago: it keeps
    up with the stream as it lands (the role's defaults, 10 s and 30 s, would leave it idle for a
    run this short)."""
    watermarks = Watermarks(await ensure_sessions_bucket(nats.jetstream()))
    settings = SessionizerSettings(
        clickhouse_url,
        interval_seconds=2.0,
        max_busy_fraction=max_busy,
        settle_seconds=SESSIONIZER_SETTLE_SECONDS,
        port=None,
    )
    rules = {project: Sessions() for project in PROJECTS}
    return Sessionizer(connect(clickhouse_url), watermarks, settings, lambda: rules)


async def sessions_lag(nats: NatsClient, run_seconds: float) -> float:
    """How far behind the inserts the sessions are now: the oldest of the projects' watermarks,
    against this process's clock, which the embedded engine shares (a project without one: the
    whole run)."""
    watermarks = Watermarks(await ensure_sessions_bucket(nats.jetstream()))
    now = datetime.now(UTC)
    lags = []
    for project in PROJECTS:
        watermark = await watermarks.get(project)
        lags.append(
            (now - watermark.inserted_through).total_seconds() if watermark.committed else run_seconds
        )
    return max(lags)


def sessions_stored(client: Any) -> int:
    return sum(
        int(client.query(f"SELECT count() FROM `{database_name(p)}`.sessions FINAL").result_rows[0][0])
        for p in PROJECTS
    )


async def acked_per_second(take: Callable[[], Awaitable[list[Msg]]], messages: int) -> float:
    """Take and acknowledge `messages` messages; how many per second."""
    started, got = time.perf_counter(), 0
    while got < messages:
        batch = await take()
        for message in batch:
            await message.ack()
        got += len(batch)
    return got / (time.perf_counter() - started)


async def pull_only(nats: NatsClient, messages: int) -> dict[str, float]:
    """Messages/s of the pull alone (ack each, no processing): nats-py `fetch` against ours."""
    js = nats.jetstream()
    config = {"filter_subject": EVENTS_SUBJECTS, "ack_policy": AckPolicy.EXPLICIT, "max_ack_pending": 20_000}
    subscription = await js.pull_subscribe(
        EVENTS_SUBJECTS, durable="bench-fetch", stream=EVENTS_STREAM, config=ConsumerConfig(**config)
    )
    fetch_rate = await acked_per_second(lambda: subscription.fetch(500, timeout=5), messages)
    await subscription.unsubscribe()
    await js.add_consumer(EVENTS_STREAM, ConsumerConfig(durable_name="bench-pipelined", **config))
    pull = PipelinedPull(nats, EVENTS_STREAM, "bench-pipelined")
    await pull.start()
    pipelined_rate = await acked_per_second(lambda: pull.take(500, timeout=5), messages)
    await pull.stop()
    return {"fetch": fetch_rate, "pipelined": pipelined_rate}


def run_child(
    role: str,
    nats_url: str,
    clickhouse_dir: Path,
    events: int,
    profile: Path | None = None,
    workers: int | None = None,
    sessionized: bool = False,
    max_busy: float = DEFAULT_MAX_BUSY_FRACTION,
    privacy: PrivacyArm = "default",
) -> dict[str, Any]:
    # py-spy's collapsed stacks (one line per stack, its sample count last), all threads
    spy = [
        shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),  # the venv's, unactivated
        "record",
        "--format",
        "raw",
        "--threads",
        "--idle",
        "--rate",
        "250",
        "-o",
        str(profile),
        "--",
    ]
    command = (spy if profile else []) + [sys.executable, __file__, "--child", role, "--nats-url", nats_url,
               "--clickhouse-url", f"chdb://{clickhouse_dir}", "--events", str(events)]  # fmt: skip
    if workers is not None:
        command += ["--workers", str(workers)]
    if sessionized:
        command += ["--sessionized", "--sessionizer-max-busy", str(max_busy)]
    if privacy != "default":
        command += ["--privacy", privacy]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the {role} child failed:\n{result.stderr[-4000:]}")
    # The child's result is its last JSON line (py-spy, when it wraps the child, prints after it).
    last = next(line for line in reversed(result.stdout.splitlines()) if line.startswith("{"))
    return dict(json.loads(last))


# ---------------------------------------------------------------------------------------------
# Report


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def report(results: dict[str, Any], events: int, messages: int, command: str) -> str:
    raw, consume, pulled = results["raw"], results["consume"], results["pull"]
    raw_rate = raw["rows"] / raw["seconds"]
    rate = consume["rows"] / consume["seconds"]
    samples = consume["samples"]
    steady = [s for s in samples if 0 < s[1] < consume["rows"]] or samples
    rss = [s[2] for s in steady]
    engine = [s[3] for s in steady]
    lines = [
        f"`{command}` — {events:,} events in {messages:,} envelopes ({events / messages:.1f} events per",
        "message), four projects, measured in one run on this machine:",
        "",
        "| measurement | events/s | ratio |",
        "|---|---:|---:|",
        "| raw `client.insert` of the consumer's rows, 10,000-row batches (the sink's limit) "
        f"| {raw_rate:,.0f} | 1.00 |",
        f"| consumer: pull → decode → enrich → batch → INSERT → ack | {rate:,.0f} | {rate / raw_rate:.2f} |",
        "",
        f"- consumer CPU: {cpu_line(consume)}",
        f"- landed: {consume['landed']:,} rows, {consume['unique']:,} distinct messageIds "
        f"(expected {events:,} of each); retries {consume['retries']}, "
        f"dead-lettered {consume['dead_lettered']}",
        f"- consumer process RSS over the run: min {mib(min(rss))}, max {mib(max(rss))}, at the end "
        f"{mib(samples[-1][2])}; of which the embedded engine tracked min {mib(min(engine))}, max "
        f"{mib(max(engine))} (ClickHouse `MemoryTracking`; the rest is Python, the pulled window and "
        "the batches being built and written, and the engine's untracked code and caches)",
        *worker_memory_lines(samples, steady),
        f"- the pull alone (ack each message, no processing): nats-py `fetch` {pulled['fetch']:,.0f} "
        f"messages/s, the pipelined pull {pulled['pipelined']:,.0f} messages/s "
        f"({pulled['pipelined'] / pulled['fetch']:.1f}x)",
        "",
        "RSS and rows written, sampled each second:",
        "",
        "| s | rows written | consumer RSS | of which engine | workers' RSS |",
        "|---:|---:|---:|---:|---:|",
    ]
    step = max(1, len(samples) // 12)
    for seconds, rows, rss_value, engine_value, workers_rss in samples[::step] + (
        [samples[-1]] if (len(samples) - 1) % step else []
    ):
        each = " + ".join(mib(value) for value in workers_rss) or "—"
        lines.append(f"| {seconds:.0f} | {rows:,} | {mib(rss_value)} | {mib(engine_value)} | {each} |")
    return "\n".join(lines)


def cpu_line(consume: dict[str, Any]) -> str:
    rows, own, workers = consume["rows"], consume["cpu_seconds"], consume["workers_cpu_seconds"]
    text = f"{own:.1f} s in the consumer's process (all its threads, the embedded engine's included)"
    if consume["workers"]:
        text += f" + {workers:.1f} s in its {consume['workers']} worker processes"
    return f"{text} for {rows:,} events: {(own + workers) / rows * 1e6:.1f} µs per event"


def worker_memory_lines(samples: list[Any], steady: list[Any]) -> list[str]:
    if not samples[0][4]:
        return []
    per_worker = [max(s[4][i] for s in steady) for i in range(len(samples[0][4]))]
    return [
        f"- worker processes' RSS (each): max {', '.join(mib(v) for v in per_worker)}; "
        f"consumer and workers together at most {mib(max(s[2] + sum(s[4]) for s in steady))}"
    ]


async def orchestrate(
    events: int, seed: int, work: Path, profile: Path | None, workers: int | None
) -> tuple[dict[str, Any], int]:
    server = NatsServerProcess(work / "nats", port=0)
    server.start()
    try:
        print(f"generating {events:,} events …", flush=True)
        requests = workload(seed, events)
        print(f"publishing {len(requests):,} envelopes …", flush=True)
        nats = await connect_nats(server.url, "bench")
        started = time.perf_counter()
        await fill(nats, requests)
        print(f"  {len(requests) / (time.perf_counter() - started):,.0f} envelopes/s", flush=True)
        del requests
        print("raw insert …", flush=True)
        raw = run_child("raw", server.url, work / "ch-raw", events)
        print(f"  {raw['rows'] / raw['seconds']:,.0f} rows/s", flush=True)
        print("consumer …", flush=True)
        consume = run_child("consume", server.url, work / "ch-consume", events, profile, workers)
        print(f"  {consume['rows'] / consume['seconds']:,.0f} events/s", flush=True)
        info = await nats.jetstream().stream_info(EVENTS_STREAM)
        messages = int(info.state.messages)
        print("pull only …", flush=True)
        pulled = await pull_only(nats, messages)
        await nats.close()
    finally:
        server.stop()
    return {"raw": raw, "consume": consume, "pull": pulled}, messages


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="20,000 events; checks only, no doc")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument(
        "--profile", type=Path, help="record the consumer child with py-spy into this file (collapsed stacks)"
    )
    parser.add_argument(
        "--workers", type=int, help="the consumer's worker processes (default: its own default, one per core)"
    )
    parser.add_argument("--child", choices=["raw", "consume"], help=argparse.SUPPRESS)
    parser.add_argument("--sessionized", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--sessionizer-max-busy", type=float, default=DEFAULT_MAX_BUSY_FRACTION, help=argparse.SUPPRESS
    )
    parser.add_argument("--privacy", choices=PRIVACY_ARMS, default="default", help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", help=argparse.SUPPRESS)
    parser.add_argument("--clickhouse-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "raw":
            result = asyncio.run(child_raw(args.nats_url, args.clickhouse_url, args.events))
        else:
            url, sessionized = args.clickhouse_url, args.sessionized
            consume = child_consume(
                args.nats_url,
                url,
                args.events,
                args.workers,
                sessionized,
                args.sessionizer_max_busy,
                args.privacy,
            )
            result = asyncio.run(consume)
        print(json.dumps(result))
        return 0
    events = 20_000 if args.quick else args.events
    with tempfile.TemporaryDirectory(prefix="hw-bench-consumer-") as work:
        measured = orchestrate(events, args.seed, Path(work), args.profile, args.workers)
        results, messages = asyncio.run(measured)
    command = "python bench/consumer.py" + ("" if events == 1_000_000 else f" --events {events}")
    command += "" if args.workers is None else f" --workers {args.workers}"
    text = report(results, events, messages, command)
    print(text)
    complete = all(results[r]["landed"] == results[r]["unique"] == events for r in ("raw", "consume"))
    if not complete:
        print("FAILED: not every event landed exactly once", file=sys.stderr)
        return 1
    if not (args.quick or args.no_doc):
        replace_section(BEGIN, END, text, "## Consumer (`bench/consumer.py`)")
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
