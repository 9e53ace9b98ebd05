"""Two sessionizers on one project (high availability), with and without deferring to each other
(docs/sessions.md, "The sessionizer role"): the work their cycles do, in one run.

Traffic arrives as it would from the consumers: every `--every` seconds an insert of
`--batch-events` events (sessions of 10 events from `--visitors` visitors). Two `Sessionizer`
roles, each with its own ClickHouse handle and watermark client, cycle the project every
`--interval` seconds for `--seconds`, once with `--defer-to-writers 0` (cycles overlap whenever
their timing does) and once with the default deferral, alternated `--rounds` times, each run on a
project of its own. Reported per mode: the cycles by outcome, the identities reconciled after an
overlap, and the seconds both spent in cycles; each run's table is checked equal to one computation
of every event (the script exits 1 otherwise).

    python bench/sessionizer_pair.py              # updates docs/benchmarks.md
    python bench/sessionizer_pair.py --seconds 20 --rounds 1 --no-doc
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sessions as sessions_bench
from docsection import replace_section

from headwater.control.clickhouse import connect
from headwater.core.migrations import apply_migrations
from headwater.core.projects.project import database_name
from headwater.core.projects.settings import Sessions
from headwater.ops.natsconn import connect_nats
from headwater.ops.natsserver import NatsServerProcess
from headwater.sessionizer.metrics import OUTCOMES
from headwater.sessionizer.runner import Sessionizer
from headwater.sessionizer.settings import DEFAULT_DEFER_TO_WRITERS_SECONDS, SessionizerSettings
from headwater.sessionizer.watermarks import Watermarks, ensure_sessions_bucket

BEGIN, END = (
    "<!-- bench/sessionizer_pair.py: generated section begins -->",
    "<!-- bench/sessionizer_pair.py: generated section ends -->",
)
MODES = (("never defers", 0.0), ("defers (default)", DEFAULT_DEFER_TO_WRITERS_SECONDS))


def sample(sessionizer: Sessionizer, name: str, labels: dict[str, str]) -> float:
    return sessionizer.metrics.registry.get_sample_value(name, labels) or 0.0


async def one_run(
    work: Path, nats_url: str, project: str, defer: float, args: argparse.Namespace
) -> dict[str, Any]:
    database = database_name(project)
    path = f"chdb://{work / 'ch'}"
    writer = connect(path)
    apply_migrations(writer, database)
    rules = Sessions()
    # Sessions start over the last hour: new visits and visits extended, as live traffic gives.
    traffic = sessions_bench.Traffic(datetime.now(UTC) - timedelta(hours=1), args.visitors, database)
    settings = SessionizerSettings(
        path, interval_seconds=args.interval, max_busy_fraction=1.0, settle_seconds=0.5,
        defer_to_writers_seconds=defer,
    )  # fmt: skip
    nats = await connect_nats(nats_url, f"bench-pair-{project}")
    bucket = await ensure_sessions_bucket(nats.jetstream())
    # Each with a handle of its own: their statements run side by side, as on two hosts.
    pair = [
        Sessionizer(connect(path), Watermarks(bucket), settings, lambda: {project: rules}) for _ in range(2)
    ]
    for one in pair:
        await one.start()
    inserted, started = 0, time.monotonic()
    while time.monotonic() - started < args.seconds:
        await asyncio.to_thread(traffic.insert, writer, inserted, args.batch_events, 0, 1)
        inserted += args.batch_events
        await asyncio.sleep(args.every)
    await asyncio.sleep(1.0)  # the last insert past the settle margin
    for one in pair:
        await one.stop()
    # Whatever the last rounds left (an overlap's reconciliation, the last inserts): one more cycle.
    closing_settings = SessionizerSettings(path, settle_seconds=0, defer_to_writers_seconds=0)
    closing = Sessionizer(writer, Watermarks(bucket), closing_settings, lambda: {project: rules})
    await closing.run_round()
    await closing.run_round()
    await nats.close()
    labels = {"project": project}
    outcomes = {
        outcome: sum(
            sample(one, "headwater_sessionizer_cycles_total", {**labels, "outcome": outcome}) for one in pair
        )
        for outcome in OUTCOMES
    }
    reconciled = "headwater_sessionizer_reconciled_identities_total"
    result = {
        "outcomes": outcomes,
        "reconciled": sum(sample(one, reconciled, labels) for one in pair),
        "cycle_seconds": sum(sample(one, "headwater_sessionizer_cycle_seconds_sum", {}) for one in pair),
        "events": inserted,
    }
    kept = sessions_bench.table_fingerprint(writer, database)
    result["exact"] = kept == sessions_bench.computed_fingerprint(writer, rules, database)
    return result


async def bench(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in MODES}
    with tempfile.TemporaryDirectory(prefix="hw-bench-pair-") as directory:
        work = Path(directory)
        server = NatsServerProcess(work / "nats", port=0)
        server.start()
        try:
            for round_ in range(args.rounds):
                for index, (name, defer) in enumerate(MODES):
                    project = f"pair{round_}m{index}"
                    result = await one_run(work, server.url, project, defer, args)
                    runs[name].append(result)
                    print(
                        f"  round {round_ + 1}, {name}: {result['outcomes']}, "
                        f"{result['reconciled']:.0f} identities reconciled, "
                        f"{result['cycle_seconds']:.1f} s in cycles, exact: {result['exact']}",
                        flush=True,
                    )
        finally:
            server.stop()
    return runs


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"`{command}` — {datetime.now(UTC):%Y-%m-%d}, chdb embedded engine, 2 cores.",
        "",
        f"Two sessionizers on one project, a round every {args.interval:g} s each, for {args.seconds:g} s "
        f"of traffic ({args.batch_events:,} events every {args.every:g} s, {args.visitors:,} visitors); "
        f"{args.rounds} run(s) per mode, alternated; medians (each run in brackets).",
        "",
        "| sessionizers | cycles advanced | skipped | deferred | identities reconciled "
        "| seconds in cycles, both | table exact |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(values: list[float], digits: int = 0) -> str:
        inner = ", ".join(f"{value:.{digits}f}" for value in values)
        return f"{statistics.median(values):.{digits}f} ({inner})"

    for name, _ in MODES:
        results = runs[name]
        lines.append(
            f"| {name} | {cell([r['outcomes']['advanced'] for r in results])} "
            f"| {cell([r['outcomes']['skipped'] for r in results])} "
            f"| {cell([r['outcomes']['deferred'] for r in results])} "
            f"| {cell([r['reconciled'] for r in results])} "
            f"| {cell([r['cycle_seconds'] for r in results], 1)} "
            f"| {'yes' if all(r['exact'] for r in results) else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="traffic time of each run")
    parser.add_argument("--interval", type=float, default=1.0, help="each sessionizer's round interval")
    parser.add_argument("--batch-events", type=int, default=2_000)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between inserts")
    parser.add_argument("--visitors", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    runs = asyncio.run(bench(args))
    command = "python bench/sessionizer_pair.py" + "".join(
        f" --{name.replace('_', '-')} {value:g}"
        for name, value in vars(args).items()
        if name not in {"no_doc"} and value != parser.get_default(name)
    )
    text = report(runs, args, command)
    print(text)
    if not all(r["exact"] for results in runs.values() for r in results):
        print("FAILED: a table the two kept differs from one computation of everything", file=sys.stderr)
        return 1
    if not args.no_doc:
        replace_section(BEGIN, END, text, "## Two sessionizers (`bench/sessionizer_pair.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
