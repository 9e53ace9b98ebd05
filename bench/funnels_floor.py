"""How far below our funnel query an array-expression funnel can go (issue: funnels, the goal of
≤ 1.5x windowFunnel's time): the 5-step ordered funnel of bench/funnels.py on the same data, timed
side by side (first runs, alternating) in four forms, each answering the same summary (people per
step, median/average/p90 time from the previous step):

- `windowFunnel`: the floor of bench/funnels.py (levels only: no step times);
- `ours`: the query the API runs (summary_query);
- `copies kept`: ours without reducing the copies of a message to one (each person's (message id,
  time, mask) grouped, sorted by time then message id), wrong where copies exist;
- `time and mask only`: each person's times and masks grouped as two numeric arrays and sorted by
  time, then the same ordered pass and summary, wrong where copies exist or two events share a
  millisecond.

The last two are not candidates: they give up what the definition needs (docs/funnels.md). They
measure what the exact form pays for de-duplication and ties, and what is left of the gap to
windowFunnel without either: the grouping into arrays and the array passes themselves. On this
data (no copies, no ties) all four give the same people per step, which the script checks.

    python bench/funnels_floor.py                 # updates docs/benchmarks.md
    python bench/funnels_floor.py --events 1000000 --people 100000 --no-doc
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from docsection import replace_section
from funnels import _EVENTS, BASE, DATABASE, NAMES, RANGE_END, WINDOW, window_funnel
from merges import settle_merges

from headwater.analytics.funnels.definition import Funnel, Step
from headwater.analytics.funnels.query import PERSON, _ordered, step_conditions, summary_query
from headwater.analytics.funnels.summary import summary_items
from headwater.control.clickhouse import connect
from headwater.core.migrations import apply_migrations

BEGIN, END = (
    "<!-- bench/funnels_floor.py: generated section begins -->",
    "<!-- bench/funnels_floor.py: generated section ends -->",
)
FORMS = ("windowFunnel", "ours", "copies kept", "time and mask only")


def _grouped(funnel: Funnel, parameters: dict[str, Any], kept_copies: bool) -> str:
    """The progress rows of `funnel` from one of the two inexact groupings (docstring above)."""
    mask = " + ".join(
        f"bitShiftLeft(toUInt32({condition}), {i})"
        for i, condition in enumerate(step_conditions(funnel, parameters))
    )
    if kept_copies:
        grouping = "groupArray((message_id, toUnixTimestamp64Milli(timestamp), mask)) AS copies"
        order = """arraySort(c -> (c.2, c.1), copies) AS events,
        arrayMap(e -> e.2, events) AS times,
        arrayMap(e -> e.3, events) AS masks"""
    else:
        grouping = (
            "groupArray(toUnixTimestamp64Milli(timestamp)) AS unsorted_times, "
            "groupArray(mask) AS unsorted_masks"
        )
        order = """arraySort(unsorted_times) AS times,
        arraySort((m, t) -> t, unsorted_masks, unsorted_times) AS masks"""
    return f"""
WITH
stored AS (
    SELECT person, {grouping}
    FROM (
        SELECT {PERSON} AS person, message_id, timestamp, {mask} AS mask
        FROM `{DATABASE}`.events
        WHERE timestamp >= {{start:DateTime64(3, 'UTC')}} AND timestamp < {{end:DateTime64(3, 'UTC')}}
    )
    WHERE person != '' AND mask != 0
    GROUP BY person
),
ordered AS (SELECT person, {order} FROM stored),
progressed AS (
    SELECT person, {_ordered(len(funnel.steps))},
        arrayMap(index -> times[index], step_events) AS step_times
    FROM ordered
)
SELECT person, level, step_times FROM progressed WHERE level > 0"""


def statements(funnel: Funnel) -> dict[str, tuple[str, dict[str, Any]]]:
    ours = summary_query(DATABASE, funnel, BASE, RANGE_END)
    forms = {"windowFunnel": window_funnel(funnel, strict=False), "ours": (ours.sql, ours.parameters)}
    items = ",\n    ".join(summary_items(funnel))
    for name, kept in (("copies kept", True), ("time and mask only", False)):
        parameters: dict[str, Any] = {"start": BASE, "end": RANGE_END, "window_ms": funnel.window_ms}
        forms[name] = (f"SELECT\n    {items}\nFROM ({_grouped(funnel, parameters, kept)})", parameters)
    return forms


def measure(work: Path, events: int, people: int, rounds: int) -> dict[str, list[float]]:
    client = connect(f"chdb://{work / 'ch'}")
    apply_migrations(client, DATABASE)
    print(f"generating {events:,} events of {people:,} people …", flush=True)
    client.command(_EVENTS, parameters={"people": people, "events": events, "base": BASE})
    print(f"  merges of that insert done after {settle_merges(client, DATABASE):.0f} s", flush=True)
    funnel = Funnel(tuple(Step("event", name) for name in NAMES), int(WINDOW / timedelta(milliseconds=1)))
    forms = statements(funnel)
    runs: dict[str, list[float]] = {name: [] for name in FORMS}
    people_per_step: dict[str, list[int]] = {}
    tag = 0
    for round_ in range(rounds):
        for name in FORMS:
            sql, parameters = forms[name]
            tag += 1
            started = time.perf_counter()
            row = client.query(f"/* floor run {tag} */ {sql}", parameters=parameters).result_rows[0]
            runs[name].append(time.perf_counter() - started)
            people_per_step[name] = [int(value) for value in row[: len(NAMES)]]
            print(f"  round {round_ + 1} {name}: {runs[name][-1]:.2f} s {people_per_step[name]}", flush=True)
    if len({tuple(counts) for counts in people_per_step.values()}) != 1:
        raise SystemExit(f"the forms disagree on this data: {people_per_step}")
    client.close()
    return runs


def report(runs: dict[str, list[float]], command: str) -> str:
    floor = statistics.median(runs["windowFunnel"])
    lines = [
        f"`{command}` — {datetime.now(UTC):%Y-%m-%d}, chdb embedded engine, 2 cores; first runs, medians "
        "(each run in brackets); the same people per step from all four.",
        "",
        "| form of the 5-step ordered funnel | time | ÷ windowFunnel |",
        "|---|---|---|",
    ]
    for name in FORMS:
        median = statistics.median(runs[name])
        each = ", ".join(f"{s:.2f}" for s in runs[name])
        lines.append(f"| {name} | {median:.2f} s ({each}) | {median / floor:.2f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hw-bench-funnels-floor-") as work:
        runs = measure(Path(work), arguments.events, arguments.people, arguments.rounds)
    command = "python bench/funnels_floor.py" + "".join(f" {a}" for a in sys.argv[1:] if a != "--no-doc")
    text = report(runs, command)
    print(text)
    if not arguments.no_doc:
        replace_section(BEGIN, END, text, "## Funnels: the floor of an array form (`bench/funnels_floor.py`)")
        print("updated docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
