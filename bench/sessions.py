"""Sessionizer benchmark, in one run on the embedded engine (issue: sessions):

1. **Full rebuild** of a project of `--events` events (default 10,000,000: 100 hours of 100k
   events/hour), timed as `headwater sessions rebuild` runs it, and as the role's first cycle
   (which also takes everything).
2. **Keeping up**: `--hours` more hours of traffic (100k events each, returning and new visitors)
   inserted one hour at a time, each followed by one sessionizer cycle, timed. Goal: a cycle costs
   ≤ 5% of a full rebuild. Then the table the cycles kept is checked equal to one computation of
   everything (a benchmark that got faster by being wrong would fail here).
3. **The consumer beside the sessionizer**: bench/consumer.py's consumer child over the same
   stream of `--consumer-events` events, alone and with the sessionizer role cycling beside it on
   the same engine, alternated `--rounds` times. Goal: ≥ 0.85x of alone.

    python bench/sessions.py                          # updates docs/benchmarks.md
    python bench/sessions.py --events 1000000 --no-doc

The generated events: sessions of 10 events 30 s apart (with jitter), starting uniformly over the
hours, each of one of `--visitors` visitors; every 50th event stored twice (a retried request:
another receipt, another request id, a timestamp 2 s later); every event a context as the browser
SDK sends it (~350 bytes, its sessionId the visitor's of the day); pages carry paths, the first event of
a session a referrer and UTM parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import consumer as consumer_bench
from docsection import DOC, replace_section
from merges import settle_merges

from headwater.analytics.sessions.query import SESSION_COLUMNS, sessions_query
from headwater.control.clickhouse import connect
from headwater.core.migrations import apply_migrations
from headwater.core.projects.project import database_name
from headwater.core.projects.settings import Sessions
from headwater.ops.natsconn import connect_nats
from headwater.ops.natsserver import NatsServerProcess
from headwater.sessionizer.cycle import CycleResult, rebuild, run_cycle
from headwater.sessionizer.settings import DEFAULT_MAX_BUSY_FRACTION
from headwater.sessionizer.watermarks import Watermarks, ensure_sessions_bucket

BEGIN, END = (
    "<!-- bench/sessions.py: generated section begins -->",
    "<!-- bench/sessions.py: generated section ends -->",
)
PROJECT = "bench"
DATABASE = database_name(PROJECT)
SESSION_EVENTS = 10
CYCLE_GOAL = 0.05
REBUILD_GOAL = 1_000_000
CONSUMER_GOAL = 0.85
# The consumer's runs, each round: alone; with the sessionizer beside it as the role runs by
# default (busy at most DEFAULT_MAX_BUSY_FRACTION of the time); and without that limit.
CONSUMER_RUNS: tuple[tuple[str, float | None], ...] = (
    ("alone", None),
    ("beside", DEFAULT_MAX_BUSY_FRACTION),
    ("beside_unpaced", 1.0),
)

# Rows `first` … `first + count - 1`; row n is event n % 10 of session n / 10, which starts
# uniformly in hours [from_hour, from_hour + hours) after `base`; every 50th row is a second copy
# of the row before it.
_EVENTS = f"""
INSERT INTO {{database:Identifier}}.events
    (message_id, type, anonymous_id, user_id, timestamp, received_at, request_id, context,
     page_url, page_host, page_path, referrer, referrer_host, utm_source, utm_medium, utm_campaign,
     browser, os, device_type, country)
SELECT
    toString(message) AS message_id,
    if(step % 3 = 0, 'page', if(step = 7 AND session % 5 = 0, 'identify', 'track')),
    concat('anon-', toString(cityHash64(session, 7) % {{visitors:UInt64}})),
    if(session % 5 = 0 AND step >= 7,
        concat('user-', toString(cityHash64(session, 7) % {{visitors:UInt64}})), ''),
    {{base:DateTime64(3, 'UTC')}} + toIntervalMillisecond(
        {{from_hour:UInt64}} * 3600000 + cityHash64(session) % ({{hours:UInt64}} * 3600000)
        + step * 30000 + cityHash64(message) % 20000 + copy * 2000),
    {{base:DateTime64(3, 'UTC')}} + toIntervalMillisecond(
        {{from_hour:UInt64}} * 3600000 + cityHash64(session) % ({{hours:UInt64}} * 3600000)
        + step * 30000 + 300 + copy * 60000),
    concat('r-', toString(number)),
    -- a context as the browser SDK sends it (~350 bytes); its sessionId the visitor's of the day
    -- (a browser keeps one across tabs: the sessions of a visitor that overlap share it)
    concat('{{"library":{{"name":"headwater.js","version":"1.4.0"}},"locale":"en-GB","page":{{"path":"',
        if(step % 3 = 0, concat('/p', toString(cityHash64(message) % 97)), '/'),
        '","title":"Shop","url":"https://shop.example/"}},"screen":{{"width":1920,"height":1080}},',
        '"timezone":"Europe/Berlin","userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36',
        ' (KHTML, like Gecko) Chrome/120.0 Safari/537.36","sessionId":"s',
        toString(cityHash64(session, 7) % {{visitors:UInt64}}), '-',
        toString(intDiv({{from_hour:UInt64}} * 3600000 + cityHash64(session) % ({{hours:UInt64}} * 3600000),
            86400000)), '"}}'),
    if(step % 3 = 0, concat('https://shop.example/p', toString(cityHash64(message) % 97)), ''),
    'shop.example',
    if(step % 3 = 0, concat('/p', toString(cityHash64(message) % 97)), ''),
    if(step = 0,
        ['', 'https://www.google.com/', 'https://t.co/x', 'https://news.example/a'][session % 4 + 1], ''),
    if(step = 0, ['', 'www.google.com', 't.co', 'news.example'][session % 4 + 1], ''),
    if(step = 0 AND session % 7 = 0, 'newsletter', ''),
    if(step = 0 AND session % 7 = 0, 'email', ''),
    if(step = 0 AND session % 7 = 0, 'spring', ''),
    ['Chrome', 'Firefox', 'Safari'][session % 3 + 1], ['Linux', 'Windows', 'Mac OS X'][session % 3 + 1],
    'Desktop', ['DE', 'FR', 'US', 'BR'][session % 4 + 1]
FROM (
    SELECT number, message, intDiv(message, {SESSION_EVENTS}) AS session,
        message % {SESSION_EVENTS} AS step, copy
    FROM (
        SELECT number,
            -- one type for both branches: as Variant(Int64, UInt64), the copy's hashes (its
            -- visitor, its time) differed from the original's, so copies were not copies
            toUInt64({{first:UInt64}} + if(number % 50 = 49, number - 1, number)) AS message,
            number % 50 = 49 AS copy
        FROM numbers({{count:UInt64}})
    )
)
"""


@dataclass(frozen=True)
class Traffic:
    base: datetime  # hour 0
    visitors: int
    database: str = DATABASE

    def insert(self, client: Any, first: int, count: int, from_hour: int, hours: int) -> None:
        """Rows `first` … `first + count - 1` of sessions starting in hours [from_hour, from_hour +
        hours). optimize_on_insert=0: an insert block holding both copies of a message keeps both,
        as two separate requests' inserts would."""
        parameters = {"base": self.base, "first": first, "count": count, "from_hour": from_hour,
                      "hours": hours, "visitors": self.visitors, "database": self.database}  # fmt: skip
        client.command(_EVENTS, parameters=parameters, settings={"optimize_on_insert": 0})


def timed(run: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """`run(*args)`'s result and the seconds it took."""
    started = time.perf_counter()
    result = run(*args)
    return result, time.perf_counter() - started


def table_fingerprint(client: Any, database: str = DATABASE) -> tuple[int, int]:
    columns = ", ".join(SESSION_COLUMNS)
    sql = f"SELECT count(), sum(cityHash64({columns})) FROM {database}.sessions FINAL"
    count, fingerprint = client.query(sql).result_rows[0]
    return int(count), int(fingerprint)


def computed_fingerprint(client: Any, rules: Sessions, database: str = DATABASE) -> tuple[int, int]:
    """One computation of every session from every event, as the query alone gives it."""
    built = sessions_query(
        database, rules, datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
    )
    columns = ", ".join(SESSION_COLUMNS)
    sql = f"SELECT count(), sum(cityHash64({columns})) FROM ({built.sql})"
    count, fingerprint = client.query(sql, parameters=built.parameters).result_rows[0]
    return int(count), int(fingerprint)


async def build_and_settle(
    client: Any, watermarks: Watermarks, rules: Sessions, traffic: Traffic, events: int, base_hours: int
) -> dict[str, Any]:
    """Events 0 … `events` - 1 over `base_hours` hours, then a full rebuild and the role's first
    cycle, each timed once the merges before it are done, and `sessions` compacted as a table kept
    for a while is: the timings and counts, for the report."""
    print(f"generating {events:,} events over {base_hours} hours …", flush=True)
    _, generating = timed(lambda: traffic.insert(client, 0, events, 0, base_hours))
    print(f"  {generating:.1f} s", flush=True)
    # A rebuild runs on a table whose parts have long been merged; timed straight after the
    # bulk insert it would share the cores with the merges of that insert (~4 s of ~18).
    settled = settle_merges(client, DATABASE)
    stored = int(client.query(f"SELECT count() FROM {DATABASE}.events").result_rows[0][0])
    print(f"  merges of that insert done after {settled:.1f} s more; {stored:,} rows", flush=True)

    print("full rebuild (`headwater sessions rebuild`) …", flush=True)
    rebuilt: CycleResult
    rebuilt, rebuild_seconds = await timed_async(
        rebuild(client, watermarks, PROJECT, rules, settle_seconds=0)
    )
    print(f"  {rebuilt.sessions:,} sessions in {rebuild_seconds:.2f} s", flush=True)
    print("first cycle (takes everything) …", flush=True)
    first, first_cycle_seconds = await timed_async(run_cycle(client, watermarks, PROJECT, rules, 0))
    print(f"  {first.sessions:,} sessions in {first_cycle_seconds:.2f} s", flush=True)
    # As before the rebuild: the cycles keep a table whose parts have long been merged, not
    # one just rewritten twice whose merges would share the cores with the cycles timed.
    after_builds = settle_merges(client, DATABASE)
    print(f"  merges of those writes done after {after_builds:.1f} s more", flush=True)
    # The merge selector leaves a few large parts of equal size alone for a while (the two
    # builds' four parts, 2M rows, stayed unmerged), then merges them: a table kept for a
    # while holds about one row per session, as after this.
    _, compacting = timed(lambda: client.command(f"OPTIMIZE TABLE {DATABASE}.sessions FINAL"))
    session_rows = int(client.query(f"SELECT count() FROM {DATABASE}.sessions").result_rows[0][0])
    print(f"  sessions compacted to {session_rows:,} rows in {compacting:.1f} s", flush=True)
    return {
        "settled_seconds": settled,
        "builds_settled_seconds": after_builds,
        "compacting_seconds": compacting,
        "session_rows": session_rows,
        "stored_rows": stored,
        "rebuild_seconds": rebuild_seconds,
        "rebuild_sessions": rebuilt.sessions,
        "first_cycle_seconds": first_cycle_seconds,
    }


async def sessionizer_part(work: Path, events: int, hours: int, hourly: int, visitors: int) -> dict[str, Any]:
    server = NatsServerProcess(work / "nats", port=0)
    server.start()
    nats = await connect_nats(server.url, "bench-sessions")
    try:
        watermarks = Watermarks(await ensure_sessions_bucket(nats.jetstream()))
        client = connect(f"chdb://{work / 'ch-sessions'}")
        apply_migrations(client, DATABASE)
        rules = Sessions()
        base_hours = max(1, events // hourly)
        # Ending now: what the cycles take is recent, within the allowed lateness.
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        traffic = Traffic(now - timedelta(hours=base_hours + hours), visitors)
        built = await build_and_settle(client, watermarks, rules, traffic, events, base_hours)

        cycles: list[dict[str, Any]] = []
        next_message = events
        for hour in range(hours):
            traffic.insert(client, next_message, hourly, base_hours + hour, 1)
            next_message += hourly
            result, seconds = await timed_async(run_cycle(client, watermarks, PROJECT, rules, 0))
            cycles.append(
                {"seconds": seconds, "identities": result.identities, "sessions": result.sessions,
                 "tombstones": result.tombstones, "advanced": result.advanced}
            )  # fmt: skip
            print(
                f"  hour {hour + 1}: {hourly:,} events → cycle {seconds:.2f} s, "
                f"{result.identities:,} identities, {result.sessions:,} sessions written",
                flush=True,
            )
        print("checking the table the cycles kept against one computation of everything …", flush=True)
        kept, computed = table_fingerprint(client), computed_fingerprint(client, rules)
        return {
            "events": events,
            "base_hours": base_hours,
            **built,
            "hourly": hourly,
            "visitors": visitors,
            "cycles": cycles,
            "kept": kept,
            "computed": computed,
        }
    finally:
        await nats.close()
        server.stop()


async def timed_async(run: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await run
    return result, time.perf_counter() - started


async def consumer_part(work: Path, events: int, rounds: int) -> dict[str, list[dict[str, Any]]]:
    server = NatsServerProcess(work / "nats-consumer", port=0)
    server.start()
    try:
        print(f"filling the stream with {events:,} events for the consumer …", flush=True)
        nats = await connect_nats(server.url, "bench-sessions")
        recent = datetime.now(UTC) - timedelta(minutes=10)
        await consumer_bench.fill(nats, consumer_bench.workload(7, events, recent))
        await nats.close()
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in CONSUMER_RUNS}
        for round_ in range(rounds):
            for name, max_busy in CONSUMER_RUNS:
                directory = work / f"ch-consumer-{name}-{round_}"
                # Each run reads the whole stream through a durable consumer of its own.
                result = consumer_bench.run_child(
                    "consume",
                    server.url,
                    directory,
                    events,
                    sessionized=max_busy is not None,
                    max_busy=max_busy or DEFAULT_MAX_BUSY_FRACTION,
                )
                runs[name].append(result)
                rate = result["rows"] / result["seconds"]
                print(f"  round {round_ + 1} {name}: {rate:,.0f} events/s", flush=True)
        return runs
    finally:
        server.stop()


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def report(part1: dict[str, Any], part2: dict[str, list[dict[str, Any]]] | None, command: str) -> str:
    # Per row stored when the rebuild ran (merges have collapsed some of the copies by then).
    rebuild_rate = part1["stored_rows"] / part1["rebuild_seconds"]
    cycle_seconds = [c["seconds"] for c in part1["cycles"]]
    cycle = statistics.median(cycle_seconds)
    cycle_ratio = cycle / part1["rebuild_seconds"]
    exact = part1["kept"] == part1["computed"]
    lines = [
        f"`{command}` — {datetime.now(UTC):%Y-%m-%d}, {platform.python_implementation()} "
        f"{platform.python_version()}, chdb embedded engine, 2 cores shared by everything.",
        "",
        f"{part1['events']:,} events ({part1['base_hours']} hours of {part1['hourly']:,}/hour, "
        f"{part1['visitors']:,} visitors, 2% stored twice) → {part1['rebuild_sessions']:,} sessions. "
        f"Timed once the background merges of the generating insert were done "
        f"({part1['settled_seconds']:.0f} s after it; {part1['stored_rows']:,} rows stored then, "
        "the merges having collapsed some copies; the rebuild's rate is per row stored). The cycles "
        "are timed once the merges of the two builds' writes were done too "
        f"({part1['builds_settled_seconds']:.0f} s) and `sessions` was compacted as the merges "
        "leave a table kept for a while, about one row per session (`OPTIMIZE … FINAL`: "
        f"{part1['session_rows']:,} rows, {part1['compacting_seconds']:.0f} s; the merge selector had left "
        "the two builds' four parts of equal size unmerged, two rows per session, which every "
        "cycle read).",
        "",
        "| measurement | value | goal |",
        "|---|---|---|",
        f"| full rebuild (`headwater sessions rebuild`) | {part1['rebuild_seconds']:.1f} s = "
        f"{rebuild_rate:,.0f} events/s | ≥ {REBUILD_GOAL:,} events/s: "
        f"{verdict(rebuild_rate >= REBUILD_GOAL)} |",
        f"| first cycle (takes everything) | {part1['first_cycle_seconds']:.1f} s | |",
        f"| one cycle after one more hour ({part1['hourly']:,} events), median of "
        f"{len(cycle_seconds)} | {cycle:.2f} s (each: {', '.join(f'{s:.2f}' for s in cycle_seconds)}) | |",
        f"| cycle ÷ full rebuild | {cycle_ratio:.1%} | ≤ {CYCLE_GOAL:.0%}: "
        f"{verdict(cycle_ratio <= CYCLE_GOAL)} |",
        f"| table kept by the cycles = one computation of everything | "
        f"{'yes' if exact else 'NO'} ({part1['kept'][0]:,} sessions) | yes |",
    ]
    if part2 is not None:
        alone = [r["rows"] / r["seconds"] for r in part2["alone"]]
        lines.append(
            f"| consumer alone, events/s (each run) | {statistics.median(alone):,.0f} "
            f"({', '.join(f'{a:,.0f}' for a in alone)}) | |"
        )
        for name, label in (
            ("beside", f"the sessionizer beside it, busy ≤ {DEFAULT_MAX_BUSY_FRACTION:.0%} (its default)"),
            ("beside_unpaced", "the sessionizer beside it, no busy limit"),
        ):
            beside = [r["rows"] / r["seconds"] for r in part2[name]]
            ratio = statistics.median(beside) / statistics.median(alone)
            rounds = sum(r["sessionizer_rounds"] for r in part2[name])
            sessions = [r["sessions"] for r in part2[name]]
            lag = statistics.median(r["sessions_lag_seconds"] for r in part2[name])
            goal = f"≥ {CONSUMER_GOAL}x: {verdict(ratio >= CONSUMER_GOAL)}" if name == "beside" else ""
            lines += [
                f"| consumer with {label}, events/s | {statistics.median(beside):,.0f} "
                f"({', '.join(f'{b:,.0f}' for b in beside)}; {rounds} sessionizer rounds; when the "
                f"last event landed, sessions covered the inserts up to {lag:.0f} s before; "
                f"{sessions[-1]:,} sessions once caught up) | |",
                f"| … ÷ alone | {ratio:.2f}x | {goal} |",
            ]
    lines += [
        "",
        "The sessionizer beside the consumer runs in the consumer's process on the same embedded "
        "engine (chdb opens a directory in one process only), cycling every 2 s, or as its busy "
        "limit lets it (after a round of t seconds it pauses at least t * (1 - f) / f), on what was "
        "inserted up to 1 s before: it competes for the same two cores, as it would with a "
        "ClickHouse server on the same machine.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--visitors", type=int, default=300_000)
    parser.add_argument("--hours", type=int, default=3, help="hours of traffic kept up with, one cycle each")
    parser.add_argument("--hourly-events", type=int, default=100_000, help="events per hour of traffic")
    parser.add_argument("--consumer-events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2, help="consumer runs alone/beside, alternated")
    parser.add_argument("--skip-consumer", action="store_true", help="parts 1 and 2 only")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hw-bench-sessions-") as directory:
        work = Path(directory)
        part1 = asyncio.run(
            sessionizer_part(work, args.events, args.hours, args.hourly_events, args.visitors)
        )
        part2 = (
            None
            if args.skip_consumer
            else asyncio.run(consumer_part(work, args.consumer_events, args.rounds))
        )
    command = "python bench/sessions.py" + "".join(
        f" --{name.replace('_', '-')} {value}"
        for name, value in vars(args).items()
        if name in {"events", "visitors", "hours", "hourly_events", "consumer_events", "rounds"}
        and value != parser.get_default(name)
    )
    text = report(part1, part2, command)
    print(text)
    if part1["kept"] != part1["computed"]:
        print(
            "FAILED: the table the cycles kept differs from one computation of everything",
            file=sys.stderr,
        )
        return 1
    beside = [] if part2 is None else part2["beside"] + part2["beside_unpaced"]
    if not all(r["sessions"] > 0 and not r["sessionizer_error"] for r in beside):
        print("FAILED: the sessionizer beside the consumer wrote no sessions, or failed", file=sys.stderr)
        return 1
    if part2 is not None and not all(
        r["landed"] == r["unique"] == args.consumer_events for runs in part2.values() for r in runs
    ):
        print("FAILED: not every event landed exactly once", file=sys.stderr)
        return 1
    if not (args.no_doc or args.skip_consumer):
        replace_section(BEGIN, END, text, "## Sessions (`bench/sessions.py`)")
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
