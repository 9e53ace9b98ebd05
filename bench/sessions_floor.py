"""How far below a sessionizer cycle any cycle built on the sessions query can go (issue: sessions,
the goal of a cycle ≤ 5% of a full rebuild), timed side by side on bench/sessions.py's data
(10M events with the SDK's contexts, 300k visitors, 100k events an hour):

- `full rebuild`: as `headwater sessions rebuild` runs it;
- `cycle`: one sessionizer cycle after each of `--hours` more hours of traffic;
- the floor, after each of `--hours` further hours, alternating with the cycles' (all of them
  within the last 6 hours, inside the allowed lateness: `--hours` is 3 at most): only what any
  cycle must do with the hour, each statement timed alone:
  1. `identify`: the identities with events inserted since the watermark, each with its earliest
     such event (a cycle's step 2);
  2. `context`: when each of them last ended a session, one aggregate over `sessions` (the least
     a cycle must learn to tell a visit going on from a new one; a cycle reads more: step 3);
  3. `copy`: the hour's events appended to the sessionizer's recent copy (step 1), which the
     statement below reads; or instead `compute from events`, the same statement reading `events`;
  4. `compute and write`: the sessions of those identities from the same bound a cycle starts a
     new visit at (their earliest new event less the copy spread), written to a table of their own:
     every identity taken as beginning a visit there and as seen before (a visit going on starts
     earlier in a cycle, which only adds work), no tombstones, no KV;
  and that statement's fixed cost: the same for one identity.

A cycle needs at least 1, 2 and 4 (and 3, or 4 reading `events`): when their sum alone is above 5%
of the rebuild, no cycle built on this statement meets the goal on this machine.

    python bench/sessions_floor.py               # updates docs/benchmarks.md
    python bench/sessions_floor.py --events 1000000 --no-doc
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sessions as sessions_bench
from docsection import replace_section
from sessions import timed, timed_async

from headwater.analytics.sessions.query import (
    DEFAULT_COPY_SPREAD,
    EVENTS,
    RECENT,
    SESSION_COLUMNS,
    EventSource,
    sessions_query,
    string_set,
)
from headwater.control.clickhouse import connect
from headwater.core.long_lists import LONG_LIST_SETTINGS, long_list_parameter
from headwater.core.migrations import apply_migrations
from headwater.core.projects.settings import Sessions
from headwater.ops.natsconn import connect_nats
from headwater.ops.natsserver import NatsServerProcess
from headwater.sessionizer.cycle import RECENT_SPAN, _keep_recent, _touched, run_cycle, snapshot_end
from headwater.sessionizer.watermarks import Watermark, Watermarks, ensure_sessions_bucket

BEGIN, END = (
    "<!-- bench/sessions_floor.py: generated section begins -->",
    "<!-- bench/sessions_floor.py: generated section ends -->",
)
DATABASE = sessions_bench.DATABASE
PROJECT = sessions_bench.PROJECT
FLOOR_TABLE = f"{DATABASE}.floor_sessions"
STEPS = ("identify", "context", "copy", "compute and write", "compute from events", "fixed cost")


def context(client: Any, identities: list[str]) -> None:
    """The least a cycle must learn from `sessions`: when each identity's last session ended (an
    event within the inactivity timeout of it goes on that visit)."""
    sql = f"""
        SELECT identity, max(ended_at) FROM {DATABASE}.sessions
        WHERE identity IN {string_set("identities")} GROUP BY identity
    """
    parameters = long_list_parameter("identities", identities)
    client.query(sql, parameters=parameters, settings=LONG_LIST_SETTINGS)


def compute_and_write(
    client: Any, rules: Sessions, bounds: dict[str, datetime], through: datetime, source: EventSource
) -> None:
    """The sessions of `bounds`' identities from their bound, into FLOOR_TABLE."""
    query = sessions_query(
        DATABASE, rules, starts=bounds, inserted_through=through, ordered=False,
        seen_before_start=list(bounds), source=source,
    )  # fmt: skip
    names = ", ".join(SESSION_COLUMNS)
    sql = f"INSERT INTO {FLOOR_TABLE} ({names}, version, is_deleted) SELECT {names}, 1, 0 FROM ({query.sql})"
    client.command(sql, parameters=query.parameters, settings={**query.settings, "optimize_on_insert": 0})


def floor(
    client: Any, rules: Sessions, watermark: Watermark, floors: dict[str, list[float]], reverse: bool
) -> int:
    """Each step of the floor for what was inserted since `watermark`, timed into `floors`; the
    identities. `reverse`: `events` read before the recent copy (so that caches favour neither)."""
    through = snapshot_end(client, 0)
    lateness = rules.inactivity_timeout_seconds + rules.lateness_seconds
    (earliest, _), seconds = timed(
        _touched, client, DATABASE, rules, watermark.inserted_through, through, lateness
    )
    floors["identify"].append(seconds)
    _, seconds = timed(context, client, list(earliest))
    floors["context"].append(seconds)
    _, seconds = timed(_keep_recent, client, DATABASE, watermark, through, RECENT_SPAN)
    floors["copy"].append(seconds)
    bounds = {identity: moment - DEFAULT_COPY_SPREAD for identity, moment in earliest.items()}
    computations = [("compute and write", RECENT, bounds), ("compute from events", EVENTS, bounds)]
    one = ("fixed cost", RECENT, dict(list(bounds.items())[:1]))
    for step, source, chosen in (*(reversed(computations) if reverse else computations), one):
        _, seconds = timed(compute_and_write, client, rules, chosen, through, source)
        floors[step].append(seconds)
    print("  floor: " + ", ".join(f"{step} {times[-1]:.2f} s" for step, times in floors.items()), flush=True)
    return len(earliest)


async def measure(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    server = NatsServerProcess(work / "nats", port=0)
    server.start()
    nats = await connect_nats(server.url, "bench-sessions-floor")
    try:
        watermarks = Watermarks(await ensure_sessions_bucket(nats.jetstream()))
        client = connect(f"chdb://{work / 'ch'}")
        apply_migrations(client, DATABASE)
        client.command(f"CREATE TABLE {FLOOR_TABLE} AS {DATABASE}.sessions")
        rules = Sessions()
        base_hours = max(1, args.events // args.hourly_events)
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        traffic = sessions_bench.Traffic(now - timedelta(hours=base_hours + 2 * args.hours), args.visitors)
        built = await sessions_bench.build_and_settle(
            client, watermarks, rules, traffic, args.events, base_hours
        )
        rebuild_seconds = built["rebuild_seconds"]

        cycles: list[float] = []
        floors: dict[str, list[float]] = {step: [] for step in STEPS}
        identities: list[int] = []
        # Alternately a cycle's hour and a floor's: both of the same age, within the lateness.
        for added in range(2 * args.hours):
            traffic.insert(
                client, args.events + added * args.hourly_events, args.hourly_events, base_hours + added, 1
            )
            if added % 2 == 0:
                _, seconds = await timed_async(run_cycle(client, watermarks, PROJECT, rules, 0))
                cycles.append(seconds)
                print(f"  cycle {seconds:.2f} s", flush=True)
                continue
            identities.append(
                floor(client, rules, await watermarks.get(PROJECT), floors, reverse=added % 4 == 3)
            )
            # The cycle takes the hour too (untimed), so that the next one starts from a watermark.
            await run_cycle(client, watermarks, PROJECT, rules, 0)
        return {"rebuild": rebuild_seconds, "cycles": cycles, "floors": floors, "identities": identities}
    finally:
        await nats.close()
        server.stop()


def report(result: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    rebuild_seconds = result["rebuild"]

    def row(label: str, times: list[float]) -> str:
        median = statistics.median(times)
        each = ", ".join(f"{t:.2f}" for t in times)
        return f"| {label} | {median:.2f} s ({each}) | {median / rebuild_seconds:.1%} |"

    floors = result["floors"]

    def summed(steps: tuple[str, ...]) -> list[float]:
        return [sum(parts) for parts in zip(*(floors[step] for step in steps), strict=True)]

    through_copy = summed(("identify", "context", "copy", "compute and write"))
    from_events = summed(("identify", "context", "compute from events"))
    with_copy = statistics.median(through_copy) / rebuild_seconds
    reading_events = statistics.median(from_events) / rebuild_seconds
    lines = [
        f"`{command}` — {datetime.now(UTC):%Y-%m-%d}, chdb embedded engine, 2 cores.",
        "",
        f"{args.events:,} events, {args.visitors:,} visitors; each hour {args.hourly_events:,} events "
        f"(~{statistics.median(result['identities']):,.0f} identities). Medians (each run in brackets).",
        "",
        "| what | time | ÷ full rebuild |",
        "|---|---|---|",
        f"| full rebuild | {rebuild_seconds:.2f} s | 100% |",
        row("a cycle after one more hour (as bench/sessions.py times it)", result["cycles"]),
        row("floor 1: identify the hour's identities", floors["identify"]),
        row("floor 2: when each one's last session ended (from `sessions`)", floors["context"]),
        row("floor 3: copy the hour to the recent copy", floors["copy"]),
        row("floor 4: compute and write their sessions (from the recent copy)", floors["compute and write"]),
        row("… the same reading `events` instead of the copy", floors["compute from events"]),
        row("… the same for one identity (the statement's fixed cost)", floors["fixed cost"]),
        row("**the floor: 1 + 2 + 3 + 4**", through_copy),
        row("**or 1 + 2 + 4 reading `events`**", from_events),
        "",
        f"The floor with the recent copy: {with_copy:.1%} of the rebuild, against ≤ 5% for a whole "
        f"cycle: {'below' if with_copy <= 0.05 else 'ABOVE'} it. Reading `events` instead: "
        f"{reading_events:.1%}, but that reads a column of the project's whole history every cycle "
        "(which the issue rules out), and its cost grows with the project.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--visitors", type=int, default=300_000)
    parser.add_argument("--hourly-events", type=int, default=100_000)
    parser.add_argument(
        "--hours",
        type=int,
        default=3,
        choices=(1, 2, 3),
        help="hours timed for cycles, and as many for the floor",
    )
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hw-bench-sessions-floor-") as directory:
        result = asyncio.run(measure(Path(directory), args))
    command = "python bench/sessions_floor.py" + "".join(
        f" --{name.replace('_', '-')} {value}"
        for name, value in vars(args).items()
        if name != "no_doc" and value != parser.get_default(name)
    )
    text = report(result, args, command)
    print(text)
    if not args.no_doc:
        replace_section(BEGIN, END, text, "### The floor of a cycle (`bench/sessions_floor.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
