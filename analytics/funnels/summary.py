"""A funnel's answer: per step how many people's attempts took it, the conversion from the first
step and from the previous required one, how many dropped before it, and the time it took from the
previous step taken (docs/funnels.md, "The answer"). The same from the query's one row and from the
reference's progress list, so the two can be compared."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .definition import Funnel
from .reference import Progress, took

MEDIAN, P90 = 0.5, 0.9
# The time of an optional step an attempt skipped, among Unix milliseconds in the query's
# `step_times` (DateTime64 reaches back to 1900: times can be negative, none is this low).
NO_TIME = "-4611686018427387904"


@dataclass(frozen=True, slots=True)
class StepSummary:
    count: int  # people whose attempt took the step
    conversion_from_start: float | None  # count ÷ the first step's (None when that is 0)
    conversion_from_previous: float | None  # count ÷ the previous required step's
    dropped: int  # took the previous required step, not this one (0 for the first)
    # From the previous step taken, in milliseconds, over the people who took this one (None for
    # the first step, or when nobody took it).
    median_ms: int | None
    average_ms: float | None
    p90_ms: int | None


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def steps_summary(
    funnel: Funnel, counts: Sequence[int], times: Sequence[tuple[int, float, int] | None]
) -> list[StepSummary]:
    """From each step's count and (median, average, p90) of its time from the previous one taken.
    A step's "previous" for the conversion and the drop-off is the nearest required one before it:
    everyone taking a step took that one, so nobody drops a negative number."""
    result = []
    for index, count in enumerate(counts):
        previous = counts[funnel.previous_required(index + 1) - 1] if index else count
        timing = times[index]
        ratios = (_ratio(count, counts[0]), _ratio(count, previous), previous - count)
        if timing is None:
            result.append(StepSummary(count, *ratios, None, None, None))
        else:
            result.append(StepSummary(count, *ratios, *timing))
    return result


def quantile(values: Sequence[int], level: float) -> int:
    """The value at position ⌊level·n⌋ of the sorted values (the last for level 1), as ClickHouse's
    quantileExact gives it: the upper of the two middle values for a median of an even count."""
    ordered = sorted(values)
    return ordered[min(int(level * len(ordered)), len(ordered) - 1)]


def summary_of_progress(funnel: Funnel, progress: Sequence[Progress]) -> list[StepSummary]:
    """The answer from each person's progress (the reference's)."""
    steps = range(1, len(funnel.steps) + 1)
    counts = [sum(1 for row in progress if took(row, step)) for step in steps]
    times: list[tuple[int, float, int] | None] = [None]
    for step in steps[1:]:
        gaps = [
            _taken_time(row, step) - max(t for t in row.step_times[: step - 1] if t is not None)
            for row in progress
            if took(row, step)
        ]
        times.append((quantile(gaps, MEDIAN), sum(gaps) / len(gaps), quantile(gaps, P90)) if gaps else None)
    return steps_summary(funnel, counts, times)


def _taken_time(row: Progress, step: int) -> int:
    time = row.step_times[step - 1]
    assert time is not None
    return time


def _aggregates(funnel: Funnel) -> list[tuple[str, str, str]]:
    """(name, aggregate function with its parameters, arguments) of each summary column. An
    optional step is taken when its time is not NO_TIME; the previous step taken is the latest
    time before it (NO_TIME is below every time). A funnel without optional steps keeps the plain
    form: its steps up to `level` are all taken."""
    steps = len(funnel.steps)
    optional = [step.optional for step in funnel.steps]

    def taken(k: int) -> str:
        return f"level >= {k} AND step_times[{k}] != {NO_TIME}" if optional[k - 1] else f"level >= {k}"

    columns = [(f"reached_{k}", "countIf", taken(k)) for k in range(1, steps + 1)]
    for k in range(2, steps + 1):
        previous = f"step_times[{k - 1}]"
        if any(optional[: k - 1]):
            previous = f"arrayMax(arraySlice(step_times, 1, {k - 1}))"
        arguments = f"step_times[{k}] - {previous}, {taken(k)}"
        columns += [
            (f"median_{k}", f"quantileExactIf({MEDIAN})", arguments),
            (f"average_{k}", "avgIf", arguments),
            (f"p90_{k}", f"quantileExactIf({P90})", arguments),
        ]
    return columns


def _with_combinator(function: str, combinator: str) -> str:
    """`quantileExactIf(0.5)` with `State` is `quantileExactIfState(0.5)`."""
    name, parenthesis, parameters = function.partition("(")
    return f"{name}{combinator}{parenthesis}{parameters}"


def summary_items(funnel: Funnel) -> list[str]:
    """The select items of the summary over the progress query's rows (`level`, `step_times`):
    `reached_k` per step, and `median_k`, `average_k`, `p90_k` from the second on."""
    return [f"{function}({arguments}) AS {name}" for name, function, arguments in _aggregates(funnel)]


def summary_state_items(funnel: Funnel) -> list[str]:
    """summary_items as aggregate states (`-State`), to be merged across groups later."""
    return [
        f"{_with_combinator(function, 'State')}({arguments}) AS {name}_state"
        for name, function, arguments in _aggregates(funnel)
    ]


def summary_merge_items(funnel: Funnel) -> list[str]:
    """summary_items from the states of summary_state_items (`-Merge`)."""
    return [
        f"{_with_combinator(function, 'Merge')}({name}_state) AS {name}"
        for name, function, _ in _aggregates(funnel)
    ]


def summary_of_row(funnel: Funnel, row: dict[str, Any]) -> list[StepSummary]:
    """The answer from the summary query's one row (named by summary_items)."""
    steps = len(funnel.steps)
    counts = [int(row[f"reached_{k}"]) for k in range(1, steps + 1)]
    times: list[tuple[int, float, int] | None] = [None]
    for k in range(2, steps + 1):
        reached = counts[k - 1] > 0
        times.append(
            (int(row[f"median_{k}"]), float(row[f"average_{k}"]), int(row[f"p90_{k}"])) if reached else None
        )
    return steps_summary(funnel, counts, times)


@dataclass(frozen=True, slots=True)
class BreakdownSummary:
    value: str | None  # None: every value outside the top ones, together
    steps: list[StepSummary]


def top_values(progress: Sequence[Progress], limit: int) -> list[str]:
    """The `limit` breakdown values with the most people (then in byte order of the value)."""
    counts: dict[str, int] = {}
    for row in progress:
        counts[row.breakdown] = counts.get(row.breakdown, 0) + 1
    ranked = sorted(counts, key=lambda value: (-counts[value], value.encode()))
    return ranked[:limit]


def breakdown_of_progress(funnel: Funnel, progress: Sequence[Progress]) -> list[BreakdownSummary]:
    """The answer per breakdown value (the reference's): the top values in rank order, then the
    others together when there are any."""
    assert funnel.breakdown is not None
    top = top_values(progress, funnel.breakdown.limit)
    groups = [
        BreakdownSummary(value, summary_of_progress(funnel, [r for r in progress if r.breakdown == value]))
        for value in top
    ]
    others = [row for row in progress if row.breakdown not in top]
    if others:
        groups.append(BreakdownSummary(None, summary_of_progress(funnel, others)))
    return groups


def no_one(funnel: Funnel) -> list[StepSummary]:
    """The answer when nobody is in the funnel."""
    steps = len(funnel.steps)
    return steps_summary(funnel, [0] * steps, [None] * steps)


def breakdown_of_rows(funnel: Funnel, rows: Sequence[dict[str, Any]]) -> list[BreakdownSummary]:
    """The answer per breakdown value from the breakdown query's rows (`is_total`, `group_other`,
    `group_value` and summary_items), already in rank order; the row of everyone left out."""
    return [
        BreakdownSummary(None if row["group_other"] else str(row["group_value"]), summary_of_row(funnel, row))
        for row in rows
        if not row["is_total"]
    ]


def total_of_rows(funnel: Funnel, rows: Sequence[dict[str, Any]]) -> list[StepSummary]:
    """The answer over everyone from the breakdown query's rows (summary_of_row of its total row)."""
    total = [row for row in rows if row["is_total"]]
    return summary_of_row(funnel, total[0]) if total else no_one(funnel)
