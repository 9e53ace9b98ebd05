"""Spool benchmark: accepting into the disk spool against publishing straight to JetStream, and
draining a large backlog back into JetStream — side by side in one run.

    python bench/spool.py                 # 50,000 envelopes each way, then a 1,000,000-event drain
    python bench/spool.py --quick         # small numbers, checks only

Each envelope is one ingest request of one ~700-byte event, published or appended by 64
concurrent writers, as concurrent requests would. Writes docs/benchmarks.md's spool section.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
from docsection import replace_section

from headwater.core.wire.subjects import EVENTS_STREAM
from headwater.edge.drainer import Drainer
from headwater.edge.fallback import CircuitBreaker
from headwater.edge.metrics import EdgeMetrics
from headwater.edge.sink import JetStreamSink
from headwater.edge.streams import StreamSettings, ensure_streams
from headwater.ops.natsconn import connect_nats
from headwater.ops.natsserver import NatsServerProcess
from headwater.spool import Spool, SpoolConfig

BEGIN, END = (
    "<!-- bench/spool.py: generated section begins -->",
    "<!-- bench/spool.py: generated section ends -->",
)
EVENT = {
    "type": "track",
    "event": "Product Added",
    "userId": "user-1234567",
    "anonymousId": "5f2b7c1e-8a3d-4e6f-9b0a-1c2d3e4f5a6b",
    "timestamp": "2026-01-15T10:20:30.123Z",
    "properties": {"product_id": "P-50732", "name": "Merino Crew Sweater", "price": 89.5, "currency": "EUR"},
    "context": {
        "library": {"name": "analytics.js", "version": "5.2.0"},
        "page": {"path": "/products/merino"},
    },
}


def envelope(n: int) -> tuple[str, bytes]:
    msg_id = f"bench-{n:012d}"
    body = {"v": 1, "project": "bench", "request_id": msg_id, "received_at": "2026-11-28T07:00:00.000Z",
            "key_kind": "public", "ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "origin": None,
            "events": [{**EVENT, "messageId": msg_id}]}  # fmt: skip
    return msg_id, orjson.dumps(body)


async def timed(count: int, writers: int, write: Callable[[int], Awaitable[None]]) -> float:
    """events/s of `count` writes by `writers` concurrent tasks."""
    numbers = iter(range(count))

    async def writer() -> None:
        for n in numbers:
            await write(n)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return count / (time.perf_counter() - started)


async def run(count: int, drain_count: int, writers: int, work: Path) -> dict[str, float]:
    server = NatsServerProcess(work / "nats", port=0)
    server.start()
    client = await connect_nats(server.url, "bench-spool")
    js = client.jetstream()
    await ensure_streams(js, StreamSettings(duplicate_window_seconds=1))
    results: dict[str, float] = {}
    try:
        sink = JetStreamSink(client, timeout_seconds=30)
        spool = await Spool(work / "spool-write", SpoolConfig(max_bytes=8 << 30)).open()

        async def direct(n: int) -> None:
            msg_id, body = envelope(n)
            await sink.publish("hw.events.bench", msg_id, body)

        async def spooled(n: int) -> None:
            msg_id, body = envelope(n)
            await spool.append("hw.events.bench", msg_id, body)

        # Alternate the two in slices, so outside load hits both alike.
        direct_rates, spool_rates = [], []
        for slice_start in range(0, count, count // 4):
            size = count // 4
            direct_rates.append(await timed(size, writers, lambda n, s=slice_start: direct(s + n)))
            spool_rates.append(await timed(size, writers, lambda n, s=slice_start: spooled(s + n)))
        results["direct"] = sum(direct_rates) / len(direct_rates)
        results["spool"] = sum(spool_rates) / len(spool_rates)
        await spool.close()
        await js.purge_stream(EVENTS_STREAM)

        backlog = await Spool(work / "spool-drain", SpoolConfig(max_bytes=8 << 30)).open()
        print(f"filling a spool with {drain_count:,} events …", flush=True)

        async def fill(n: int) -> None:
            msg_id, body = envelope(10**9 + n)
            await backlog.append("hw.events.bench", msg_id, body)

        results["fill"] = await timed(drain_count, writers, fill)

        async def probe() -> None:
            await js.stream_info(EVENTS_STREAM)

        breaker = CircuitBreaker(probe)
        drainer = Drainer(backlog, js, breaker, EdgeMetrics(), batch=512, pace=0)
        assert backlog.try_acquire_drain_lock()
        print("draining …", flush=True)
        started = time.perf_counter()
        drained = 0
        while drained < drain_count:
            drained += await drainer.drain_once()
        results["drain_seconds"] = time.perf_counter() - started
        results["drain"] = drain_count / results["drain_seconds"]
        info = await js.stream_info(EVENTS_STREAM)
        results["in_stream"] = float(info.state.messages)
        await breaker.stop()
        await backlog.close()
    finally:
        await client.close()
        server.stop()
    return results


def report(results: dict[str, float], count: int, drain_count: int, writers: int, command: str) -> str:
    ratio = results["direct"] / results["spool"]
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{command}`:",
        "one ~700-byte event per envelope,",
        f"{writers} concurrent writers, {count:,} envelopes each way in alternating slices.",
        "",
        "| | events/s |",
        "|---|---:|",
        f"| published straight to JetStream (acknowledged) | {results['direct']:,.0f} |",
        f"| accepted into the spool (committed, FULL sync) | {results['spool']:,.0f} |",
        f"| cost of the spool path vs the direct path (goal at most 2x) | {ratio:.2f}x |",
        f"| filling the drain backlog (spool appends) | {results['fill']:,.0f} |",
        f"| draining {drain_count:,} events back into JetStream | {results['drain']:,.0f} |",
        "",
        f"The drain of {drain_count:,} events took {results['drain_seconds']:.1f} s",
        f"(goal: 1,000,000 in under 120 s); the stream then held {results['in_stream']:,.0f} messages.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--drain", type=int, default=1_000_000)
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="small numbers; checks only, no doc")
    args = parser.parse_args()
    if args.quick:
        args.count, args.drain = 2_000, 5_000
    with tempfile.TemporaryDirectory(prefix="hw-bench-spool-") as tmp:
        results = asyncio.run(run(args.count, args.drain, args.writers, Path(tmp)))
    command = "python bench/spool.py" + (" --quick" if args.quick else "")
    text = report(results, args.count, args.drain, args.writers, command)
    print(text)
    if results["in_stream"] < args.drain:
        print("FAILED: the stream holds fewer messages than were drained", file=sys.stderr)
        return 1
    if not args.quick:
        replace_section(BEGIN, END, text, "## Spool (`bench/spool.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
