"""Import benchmark (issue 23's numbers): the Singer path's rows/s and the events import's events/s
against the live consumer's, one after the other on one machine.

    python bench/import.py                        # 200,000 Singer rows, 200,000 events
    python bench/import.py --rows 1000000 --events 1000000
    python bench/import.py --rows 1000000 --events 1000000 --rounds 3   # medians (~8 min)

It runs bench/import_singer.py (tap output → `target-headwater` → control plane → JetStream →
import writer → ClickHouse) and bench/import_events.py (`headwater import events` through a
running `headwater up`'s edge, side by side with bench/consumer.py at the same size), prints what
each printed, and a summary against the goals: Singer ≥ 50,000 rows/s to durable; events import
≥ 0.8x the consumer benchmark. Run it on an idle machine: both compete for the same cores. With
`--rounds N`, the Singer part runs N times and the events part alternates N imports with N
consumer runs; the summary takes medians (each rate alone moves by 10-20% from run to run).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

from settle import settle

HERE = Path(__file__).resolve().parent
SINGER_GOAL = 50_000
EVENTS_GOAL = 0.8


def run(script: str, *args: str) -> str:
    print(f"+ python bench/{script} {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, str(HERE / script), *args], capture_output=True, text=True, check=False
    )
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        raise SystemExit(f"bench/{script} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def figure(pattern: str, text: str, what: str) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise SystemExit(f"no {what} in the output above")
    return float(match.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="Singer rows")
    parser.add_argument("--events", type=int, default=200_000, help="events imported (and consumed)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="Singer runs, and import/consumer runs alternated; medians"
    )
    args = parser.parse_args()
    singer_rates = []
    for _ in range(args.rounds):
        singer = run("import_singer.py", "--rows", str(args.rows))
        singer_rates.append(
            figure(r"to durable \(target exit\)\s+[\d.]+ s\s+([\d,]+) rows/s", singer, "Singer rate")
        )
    # The Singer run's files written back and removed before the next part is timed: one events
    # run started straight after it measured 0.64x where runs on their own measured 0.80-0.82x.
    settle(10)
    events = run("import_events.py", "--events", str(args.events), "--rounds", str(args.rounds))
    rows_per_second = statistics.median(singer_rates)
    ratio = figure(r"import ÷ consumer: ([\d.]+)x", events, "events ratio")
    met = {True: "met", False: "NOT met"}
    print()
    singer_met, events_met = met[rows_per_second >= SINGER_GOAL], met[ratio >= EVENTS_GOAL]
    each = f" (median of {', '.join(f'{r:,.0f}' for r in singer_rates)})" if args.rounds > 1 else ""
    print(f"Singer: {rows_per_second:,.0f} rows/s to durable{each} (goal ≥ {SINGER_GOAL:,}: {singer_met})")
    print(f"events import: {ratio:.2f}x the consumer benchmark (goal ≥ {EVENTS_GOAL}x: {events_met})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
