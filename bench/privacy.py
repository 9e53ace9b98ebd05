"""What privacy costs the consumer (issue: privacy): bench/consumer.py's consumer over the same
pre-filled stream, in three arms alternated `--rounds` times, each run in its own process on its own
embedded ClickHouse directory (removed after it; the disk synced before each run):

- `off`: neither the bot filter nor anonymisation rules (the consumer as it was before them);
- `default`: the product's defaults (the bot filter on, in `flag` mode; no rules);
- `rules`: ten anonymisation rules (bench/anonymisation.py's TEN_RULES: three keyed hashes, a
  nested drop, a five-detector redact of `traits.*`, four URL rules, a truncate) and the bot filter
  with a 100-network project blocklist and an operator's file of 5,000 data-centre ranges.

Goal: `rules` ≥ 0.8x of `off`. Each run checks every event landed exactly once.

    python bench/privacy.py                  # 1,000,000 events, 2 rounds (~4 min); updates docs/benchmarks.md
    python bench/privacy.py --events 300000 --rounds 1 --no-doc
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import consumer as consumer_bench
from docsection import DOC, replace_section
from settle import settle

from headwater.ops.natsconn import connect_nats
from headwater.ops.natsserver import NatsServerProcess

BEGIN, END = (
    "<!-- bench/privacy.py: generated section begins -->",
    "<!-- bench/privacy.py: generated section ends -->",
)
ARMS: tuple[consumer_bench.PrivacyArm, ...] = ("off", "default", "rules")
GOAL = 0.8


def measure(events: int, rounds: int, seed: int, work: Path) -> dict[str, list[float]]:
    server = NatsServerProcess(work / "nats", port=0)
    server.start()
    try:
        print(f"generating and publishing {events:,} events …", flush=True)

        async def fill() -> None:
            nats = await connect_nats(server.url, "bench-privacy")
            await consumer_bench.fill(nats, consumer_bench.workload(seed, events))
            await nats.close()

        asyncio.run(fill())
        rates: dict[str, list[float]] = {arm: [] for arm in ARMS}
        for round_ in range(rounds):
            for arm in ARMS:
                directory = work / f"ch-{arm}-{round_}"
                settle()  # each arm on a synced disk, not beside the last one's write-back
                result = consumer_bench.run_child(
                    "consume", server.url, directory / "ch", events, privacy=arm
                )
                if not result["landed"] == result["unique"] == events:
                    raise SystemExit(
                        f"{arm}: {result['landed']} rows, {result['unique']} distinct of {events}"
                    )
                shutil.rmtree(directory, ignore_errors=True)
                rate = result["rows"] / result["seconds"]
                rates[arm].append(rate)
                print(f"  round {round_ + 1} {arm}: {rate:,.0f} events/s", flush=True)
    finally:
        server.stop()
    return rates


def report(rates: dict[str, list[float]], events: int, rounds: int, command: str) -> str:
    median = {arm: statistics.median(values) for arm, values in rates.items()}
    ratio = median["rules"] / median["off"]
    lines = [
        f"`{command}` — {date.today().isoformat()}, CPython {platform.python_version()}, "
        f"{events:,} events (bench/consumer.py's workload), each arm run {rounds} time(s) in turn, "
        "its own process and embedded ClickHouse, the consumer's default worker processes.",
        "",
        "| arm | events/s, median (each run) | ÷ off | goal |",
        "|---|---|---:|---|",
    ]
    labels = {
        "off": "no bot filter, no rules",
        "default": "bot filter (defaults: `flag`), no rules",
        "rules": (
            "ten anonymisation rules + bot filter with a 100-network blocklist and 5,000 data-centre ranges"
        ),
    }
    for arm in ARMS:
        each = ", ".join(f"{value:,.0f}" for value in rates[arm])
        goal = f"≥ {GOAL}x: {'met' if ratio >= GOAL else 'NOT met'}" if arm == "rules" else ""
        lines.append(
            f"| {labels[arm]} | {median[arm]:,.0f} ({each}) | {median[arm] / median['off']:.2f}x | {goal} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hw-bench-privacy-") as work:
        rates = measure(args.events, args.rounds, args.seed, Path(work))
    command = "python bench/privacy.py"
    command += "" if args.events == 1_000_000 else f" --events {args.events}"
    command += "" if args.rounds == 2 else f" --rounds {args.rounds}"
    text = report(rates, args.events, args.rounds, command)
    print(text)
    print(f"({time.perf_counter() - started:.0f} s)")
    if not args.no_doc:
        replace_section(BEGIN, END, text, "## Privacy in the consumer (`bench/privacy.py`)")
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
