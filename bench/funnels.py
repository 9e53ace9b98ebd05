"""Funnel benchmark on the embedded engine (issue: funnels): the funnel query against a hand-written
`windowFunnel` query over the same events, the floor a funnel cannot beat by much.

`--events` events (default 10,000,000) of `--people` people (default 1,000,000), ten events each a
minute apart (plus under a second of jitter, so no two of a person share a millisecond), starting
anywhere in 30 days; each event one of the funnel's five. Timed, alternating, first runs only (a
repeated statement is served faster by the engine's caches): a 5-step funnel in `ordered` order
broken down by browser (one per person) and without a breakdown, in `strict` and in `unordered`
order, ours (the queries the API runs) and windowFunnel's (default and `strict_order`, grouped by
the browser for the breakdown) computing the same per-step counts. In `ordered` order, on this data
(no copies, no ties, distinct steps) the two definitions agree, so the counts must be equal: a
benchmark that got faster by being wrong fails here. In `strict` order they differ by definition
(windowFunnel's `strict_order` stops a person at the first step out of order and lets an earlier
step come back between two: docs/funnels.md), so only the time is compared; the tests hold strict
order to the reference. In `unordered` order windowFunnel (default) is the floor of time only;
its counts are checked against a plain query: on this data (each event exactly one step, no ties,
no copies) a person's level is the most distinct step names among an event and those within the
window after it.

Also the per-start form (docs/funnels.md, "How it is computed") on the same data: the ordered
funnel with its third step optional, and with its third step at most 5 minutes after the step
before it, each timed against windowFunnel of the plain funnel (no goal: this form is quadratic
in a person's events). Their counts are checked against the plain funnel's as the definitions
require: the first two steps the same; with the optional step, at most as many people at it and
at least as many at the last step; with the step window, at most as many at every step.

Paths (docs/paths.md): 4 steps deep from the funnel's first event, timed the same way (first runs)
as the API answers it (the numbered form here) and in the named form, alternating; the two must
give the same rows, and their people equal a plain count of the people with that event; goal
under 2 s.

    python bench/funnels.py                       # updates docs/benchmarks.md
    python bench/funnels.py --events 1000000 --people 100000 --no-doc
    python bench/funnels.py --paths-only          # the paths alone, printed
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from docsection import replace_section
from merges import settle_merges

from headwater.analytics.funnels.definition import Breakdown, Funnel, Step
from headwater.analytics.funnels.query import PERSON, breakdown_query, step_conditions, summary_query
from headwater.analytics.paths.definition import Paths
from headwater.analytics.paths.query import graph_query, in_either_form
from headwater.control.clickhouse import connect
from headwater.core.migrations import apply_migrations

BEGIN, END = (
    "<!-- bench/funnels.py: generated section begins -->",
    "<!-- bench/funnels.py: generated section ends -->",
)
DATABASE = "hw_bench_funnels"
NAMES = ["Viewed Product", "Added to Cart", "Started Checkout", "Entered Payment", "Purchased"]
WINDOW = timedelta(hours=1)
RATIO_GOAL, SECONDS_GOAL = 1.5, 2.0
BASE = datetime(2026, 11, 1, tzinfo=UTC)
RANGE_END = BASE + timedelta(days=31)
BROWSERS = ["Chrome", "Firefox", "Safari"]  # one per person: any attribution gives the same

_EVENTS = f"""
INSERT INTO {DATABASE}.events
    (message_id, type, event, anonymous_id, timestamp, received_at, request_id, browser)
SELECT toString(number), 'track',
    {NAMES}[cityHash64(number, 1) % {len(NAMES)} + 1],
    concat('person-', toString(intDiv(number, 10) % {{people:UInt64}})),
    {{base:DateTime64(3, 'UTC')}} + toIntervalMillisecond(
        cityHash64(intDiv(number, 10) % {{people:UInt64}}) % (30 * 86400000)
        + (number % 10) * 60000 + cityHash64(number, 2) % 1000),
    now64(3), 'r',
    {BROWSERS}[cityHash64(intDiv(number, 10) % {{people:UInt64}}, 3) % {len(BROWSERS)} + 1]
FROM numbers({{events:UInt64}})
"""


Counts = list[Any]  # per step; or per breakdown value, sorted: [value, count per step …]


def first_run(
    client: Any, sql: str, parameters: dict[str, Any], tag: int, counts_of: Callable[[list[Any]], Counts]
) -> tuple[Counts, float]:
    """The per-step counts (`counts_of` the rows) and the seconds of a statement the engine has
    not seen (`tag` makes its text new)."""
    started = time.perf_counter()
    rows = client.query(f"/* run {tag} */ {sql}", parameters=parameters).result_rows
    return counts_of(rows), time.perf_counter() - started


def totals(rows: list[Any]) -> Counts:
    return [int(value) for value in rows[0][: len(NAMES)]]


def our_values(rows: list[Any]) -> Counts:
    """breakdown_query's rows but everyone's: is_total, group_other, group_value, reached_1 …"""
    return sorted([row[2], *map(int, row[3 : 3 + len(NAMES)])] for row in rows if not row[0])


def their_values(rows: list[Any]) -> Counts:
    return sorted([row[0], *map(int, row[1 : 1 + len(NAMES)])] for row in rows)


def window_funnel(funnel: Funnel, strict: bool) -> tuple[str, dict[str, Any]]:
    """windowFunnel's per-step counts of `funnel` (per `browser` when it has a breakdown)."""
    parameters: dict[str, Any] = {"start": BASE, "end": RANGE_END}
    conditions = ", ".join(step_conditions(funnel, parameters))
    mode = ", 'strict_order'" if strict else ""
    counts = ", ".join(f"countIf(level >= {k})" for k in range(1, len(funnel.steps) + 1))
    by_value = funnel.breakdown is not None
    sql = f"""
        SELECT {"value, " if by_value else ""}{counts} FROM (
            SELECT {PERSON} AS person, any(browser) AS value,
                windowFunnel({funnel.window_ms}{mode})(
                    toUInt64(toUnixTimestamp64Milli(timestamp)), {conditions}) AS level
            FROM {DATABASE}.events
            WHERE timestamp >= {{start:DateTime64(3, 'UTC')}} AND timestamp < {{end:DateTime64(3, 'UTC')}}
            GROUP BY person
        )
        {"GROUP BY value" if by_value else ""}
    """
    return sql, parameters


def distinct_steps(window_ms: int) -> tuple[str, dict[str, Any]]:
    """The unordered funnel's per-step counts where every event is exactly one step, no two of a
    person at one time and no copies: per person the most distinct names among an event and the
    events at most the window after it (not timed: a check)."""
    parameters: dict[str, Any] = {"start": BASE, "end": RANGE_END, "window_ms": window_ms}
    counts = ", ".join(f"countIf(level >= {k})" for k in range(1, len(NAMES) + 1))
    sql = f"""
        SELECT {counts} FROM (
            SELECT arrayMax(arrayMap(
                s -> length(arrayDistinct(arrayFilter(
                    (n, t) -> t >= s AND t - s <= {{window_ms:Int64}}, names, times))),
                times)) AS level
            FROM (
                SELECT groupArray(event) AS names, groupArray(toUnixTimestamp64Milli(timestamp)) AS times
                FROM {DATABASE}.events
                WHERE timestamp >= {{start:DateTime64(3, 'UTC')}} AND timestamp < {{end:DateTime64(3, 'UTC')}}
                    AND event IN {{names:Array(String)}}
                GROUP BY {PERSON}
            )
        )
    """
    return sql, {**parameters, "names": NAMES}


def measure(work: Path, events: int, people: int, rounds: int, paths_only: bool = False) -> dict[str, Any]:
    client = connect(f"chdb://{work / 'ch'}")
    apply_migrations(client, DATABASE)
    print(f"generating {events:,} events of {people:,} people …", flush=True)
    client.command(_EVENTS, parameters={"people": people, "events": events, "base": BASE})
    # Timed once the background merges of that insert are done: they would share the cores.
    print(f"  merges of that insert done after {settle_merges(client, DATABASE):.0f} s", flush=True)
    results: dict[str, Any] = {}
    tag = 0
    steps = tuple(Step("event", name) for name in NAMES)
    window_ms = int(WINDOW / timedelta(milliseconds=1))
    plain = Funnel(steps, window_ms, "ordered")
    optional = replace(plain, steps=(*steps[:2], replace(steps[2], optional=True), *steps[3:]))
    within = replace(plain, steps=(*steps[:2], replace(steps[2], window_ms=STEP_WINDOW_MS), *steps[3:]))
    funnels = (
        ()
        if paths_only
        else (
            ("ordered, by browser", Funnel(steps, window_ms, "ordered", Breakdown("browser"))),
            ("ordered", plain),
            ("strict", Funnel(steps, window_ms, "strict")),
            ("unordered", Funnel(steps, window_ms, "unordered")),
            (OPTIONAL_LABEL, optional),
            (WITHIN_LABEL, within),
        )
    )
    for label, funnel in funnels:
        by_value = funnel.breakdown is not None
        ours = (breakdown_query if by_value else summary_query)(DATABASE, funnel, BASE, RANGE_END)
        # The floor of a funnel with step options is windowFunnel of the plain one.
        floor_sql, floor_parameters = window_funnel(
            replace(funnel, steps=steps) if funnel.has_step_options else funnel,
            strict=funnel.order == "strict",
        )
        runs: dict[str, list[float]] = {"ours": [], "windowFunnel": []}
        counts: dict[str, Counts] = {}
        for round_ in range(rounds):
            for side, sql, parameters, counts_of in (
                ("ours", ours.sql, ours.parameters, our_values if by_value else totals),
                ("windowFunnel", floor_sql, floor_parameters, their_values if by_value else totals),
            ):
                tag += 1
                counts[side], seconds = first_run(client, sql, parameters, tag, counts_of)
                runs[side].append(seconds)
                print(f"  {label} round {round_ + 1} {side}: {seconds:.2f} s {counts[side]}", flush=True)
        if funnel.has_step_options:
            check_step_options(label, funnel, counts["ours"], counts["windowFunnel"])
        elif funnel.order == "ordered" and counts["ours"] != counts["windowFunnel"]:
            raise SystemExit(f"{label}: counts differ: {counts}")
        if funnel.order == "unordered":
            distinct = totals(client.query(*distinct_steps(window_ms)).result_rows)
            if counts["ours"] != distinct:
                raise SystemExit(
                    f"{label}: counts differ from distinct steps per window: {counts}, {distinct}"
                )
        results[label] = {"runs": runs, "counts": counts["ours"]}
    results[PATHS_LABEL] = measure_paths(client, rounds, tag)
    client.close()
    return results


def check_step_options(label: str, funnel: Funnel, ours: Counts, plain: Counts) -> None:
    """The counts of `funnel` (its third step optional, or with a window of its own) against the
    plain funnel's: the first two steps the same; with the optional step, the last step at least
    as many people and the optional one at most as many; with the step window, every step at most
    as many."""
    same = ours[:2] == plain[:2]
    if funnel.steps[2].optional:
        holds = same and ours[2] <= plain[2] and ours[-1] >= plain[-1]
    else:
        holds = same and all(mine <= theirs for mine, theirs in zip(ours, plain, strict=True))
    if not holds:
        raise SystemExit(f"{label}: counts {ours} do not fit the plain funnel's {plain}")


PATHS_LABEL = "paths"
PATHS_API, PATHS_NAMED = "as the API answers it", "the named form alone"
OPTIONAL_LABEL = "ordered, step 3 optional"
STEP_WINDOW_MS = 5 * 60_000
WITHIN_LABEL = "ordered, step 3 within 5 min"
NO_GOAL = (OPTIONAL_LABEL, WITHIN_LABEL)
PATHS_STEPS = 4


def measure_paths(client: Any, rounds: int, tag: int) -> dict[str, Any]:
    """Paths 4 steps deep from the funnel's first event, first runs, alternating: as the API
    answers it (the numbered form, or the named one where it has too many steps) and the named
    form alone. Both must give the same rows, and everyone with that event must have a path (a
    plain count: the check that the query is not fast by being wrong)."""
    paths = Paths(start=Step("event", NAMES[0]), steps=PATHS_STEPS)
    named = graph_query(DATABASE, paths, BASE, RANGE_END, numbered=False)
    floor_sql = f"""
        SELECT uniqExact({PERSON}) FROM {DATABASE}.events
        WHERE event = {{name:String}} AND timestamp >= {{start:DateTime64(3, 'UTC')}}
            AND timestamp < {{end:DateTime64(3, 'UTC')}}
    """
    parameters = {"name": NAMES[0], "start": BASE, "end": RANGE_END}
    expected = int(client.query(floor_sql, parameters=parameters).result_rows[0][0])

    def as_the_api(tag: int) -> tuple[list[Any], str]:
        """control/paths.py's way: the numbered form, the named one if it has too many steps."""
        rows, numbered = in_either_form(
            lambda built: (
                client.query(f"/* run {tag} */ {built.sql}", parameters=built.parameters).result_rows
            ),
            DATABASE,
            paths,
            BASE,
            RANGE_END,
        )
        return rows, "numbered" if numbered else "named"

    def named_form(tag: int) -> tuple[list[Any], str]:
        return client.query(f"/* run {tag} */ {named.sql}", parameters=named.parameters).result_rows, "named"

    runs: dict[str, list[float]] = {PATHS_API: [], PATHS_NAMED: []}
    answers: dict[str, list[Any]] = {}
    forms: dict[str, str] = {}
    for round_ in range(rounds):
        for label, run in ((PATHS_API, as_the_api), (PATHS_NAMED, named_form)):
            tag += 1
            started = time.perf_counter()
            answers[label], forms[label] = run(tag)
            runs[label].append(time.perf_counter() - started)
            print(
                f"  paths round {round_ + 1}, {label} ({forms[label]}): {runs[label][-1]:.2f} s", flush=True
            )
    if answers[PATHS_API] != answers[PATHS_NAMED]:
        raise SystemExit("paths: the two forms answer differently")
    rows = answers[PATHS_NAMED]
    people = int(rows[0][-1]) if rows else 0
    if people != expected:
        raise SystemExit(f"paths: {people} people, but {expected} have the start event")
    return {"runs": runs, "forms": forms, "people": people, "edges": sum(1 for row in rows if row[0])}


def _people_per_step(counts: Counts) -> str:
    if counts and isinstance(counts[0], list):  # per value: the values' sums
        counts = [sum(row[step] for row in counts) for step in range(1, len(NAMES) + 1)]
    return ", ".join(f"{count:,}" for count in counts)


def report(results: dict[str, Any], events: int, people: int, command: str) -> str:
    lines = [
        f"`{command}` — {datetime.now(UTC):%Y-%m-%d}, {platform.python_implementation()} "
        f"{platform.python_version()}, chdb embedded engine, 2 cores.",
        "",
        f"{events:,} events of {people:,} people; a 5-step funnel of events, window 1 hour; first runs, "
        "medians (each run in brackets).",
        "",
        "| funnel (our people per step) | ours | windowFunnel | ours ÷ windowFunnel | goal |",
        "|---|---|---|---|---|",
    ]
    for order, result in results.items():
        if order == PATHS_LABEL:
            continue
        ours, floor = (statistics.median(result["runs"][name]) for name in ("ours", "windowFunnel"))
        each = {name: ", ".join(f"{s:.2f}" for s in result["runs"][name]) for name in result["runs"]}
        met = ours / floor <= RATIO_GOAL and ours < SECONDS_GOAL
        goal = f"≤ {RATIO_GOAL}x and < {SECONDS_GOAL:.0f} s: {'met' if met else 'NOT met'}"
        lines.append(
            f"| {order} ({_people_per_step(result['counts'])}) "
            f"| {ours:.2f} s ({each['ours']}) | {floor:.2f} s ({each['windowFunnel']}) | {ours / floor:.2f}x "
            f"| {'— (per-start form; floor: the plain funnel)' if order in NO_GOAL else goal} |"
        )
    if PATHS_LABEL in results:
        paths = results[PATHS_LABEL]
        lines += [
            "",
            f"Paths (docs/paths.md), {PATHS_STEPS} steps deep from `{NAMES[0]}`, both kinds, no cleaning, "
            f"50 edges: {paths['people']:,} people with a path, {paths['edges']} edges answered, the same "
            "from both; first runs, alternating, medians (each run in brackets):",
            "",
            "| paths | form | time | goal |",
            "|---|---|---|---|",
        ]
        for label in (PATHS_API, PATHS_NAMED):
            seconds = statistics.median(paths["runs"][label])
            each = ", ".join(f"{s:.2f}" for s in paths["runs"][label])
            goal = f"< {SECONDS_GOAL:.0f} s: {'met' if seconds < SECONDS_GOAL else 'NOT met'}"
            lines.append(
                f"| {label} | {paths['forms'][label]} | {seconds:.2f} s ({each}) "
                f"| {goal if label == PATHS_API else '—'} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--paths-only", action="store_true", help="only the paths (implies --no-doc)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hw-bench-funnels-") as work:
        results = measure(
            Path(work), arguments.events, arguments.people, arguments.rounds, arguments.paths_only
        )
    command = "python bench/funnels.py" + "".join(f" {a}" for a in sys.argv[1:] if a != "--no-doc")
    text = report(results, arguments.events, arguments.people, command)
    print(text)
    if not (arguments.no_doc or arguments.paths_only):
        replace_section(BEGIN, END, text, "## Funnels (`bench/funnels.py`)")
        print("updated docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
