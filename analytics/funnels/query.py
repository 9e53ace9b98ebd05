"""The ClickHouse query computing each person's progress through a funnel (docs/funnels.md);
reference.py is the same definition in plain Python, and the tests hold the two equal.

Parameters only: every step's name or path pattern, the window and the time range are bound, never
spliced. Shape: the rows of the range (in `ordered` and `unordered` mode only those matching a
step: the others cannot change the result) grouped per person into an array, copies of a message
reduced to the one received first, sorted by (timestamp, message id); then per person:

- `ordered`: for each step k, a pass keeping after each event the start (index and time) of the
  latest-starting attempt that has reached k so far. A later start is never worse (more of its
  window remains), and an event extends step k from the state before it, so it fills one step per
  attempt. The deepest step's attempt is then retraced from its start.
- `strict`: for each event that is the first step, how many of the events from it on match the
  steps one after another within the window; the deepest, starting last.
- with exclusions, optional steps or step windows, in either order: a row per start (an event that
  is the first step), its attempt built by a forward pass, a backward pass and a greedy pick, then
  checked for exclusions; the person's attempt chosen among the rows (_per_start). Funnels without
  any of the three get exactly the two above.
- `unordered` (never with exclusions, optional steps or step windows): an attempt per event of
  any step, keeping the events of its window that can each fill a different step (_unordered: a
  maximum matching, exact when an event fills several steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from headwater.analytics.sessions.query import identity_expression
from headwater.core.projects.settings import Sessions

from .definition import Funnel, PeopleList, Step
from .filters import Binder, Filter, breakdown_sql, filter_sql
from .summary import NO_TIME, summary_items, summary_merge_items, summary_state_items

PERSON = "if(user_id != '', user_id, anonymous_id)"
# The rows a question leaves out unless it includes bots (docs/privacy.md): read before the copies
# of a message are reduced to one, so a message counts when any copy is a person's; the references
# leave them out at the same point (funnels.reference.people).
NOT_A_BOT = "NOT is_bot"
# The sort of a unit's copies (tuples of message id, then `copy_rank`, ...) putting each message's
# copies together, the highest rank first: the copy a merge keeps, the one received first
# (core/migrations/copy_rank.py), then taken as the first of its run.
COPY_ORDER = "c -> (c.1, bitNot(c.2))"
# No attempt (or no time: an optional step skipped), among Unix milliseconds (DateTime64 reaches
# back to 1900: times can be negative).
_NONE = NO_TIME


@dataclass(frozen=True)
class FunnelQuery:
    sql: str
    parameters: dict[str, Any]


def like_pattern(glob: str) -> str:
    """A `*` glob as a LIKE pattern: LIKE's own wildcards and escape taken literally."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _base_condition(name: str, step: Step, parameters: dict[str, Any]) -> str:
    if step.kind == "event":
        parameters[name] = step.value
        return f"event = {{{name}:String}}"
    parameters[name] = like_pattern(step.value)
    return f"(type = 'page' AND page_path LIKE {{{name}:String}})"


def _all_of(conditions: list[str]) -> str:
    return conditions[0] if len(conditions) == 1 else "(" + " AND ".join(conditions) + ")"


@dataclass(frozen=True)
class _Conditions:
    """Each step's condition in two parts: on the message's body (its name, page, properties: the
    same in every copy) and on the columns enriched per copy (browser, country, ...: a retry could
    differ). And the funnel's filters in the same two parts (None: none of the kind), and each
    exclusion's condition as a step's."""

    body: list[str]
    per_copy: list[str | None]
    funnel_body: str | None
    funnel_per_copy: str | None
    exclusion_body: list[str]
    exclusion_per_copy: list[str | None]

    def step(self, index: int) -> str:
        return _both(self.body[index], self.per_copy[index])

    def exclusion(self, index: int) -> str:
        return _both(self.exclusion_body[index], self.exclusion_per_copy[index])

    @property
    def any_per_copy(self) -> bool:
        return self.funnel_per_copy is not None or any(
            c is not None for c in (*self.per_copy, *self.exclusion_per_copy)
        )


def _both(body: str, per_copy: str | None) -> str:
    return body if per_copy is None else f"({body} AND {per_copy})"


def _split(filters: tuple[Filter, ...], binder: Binder) -> tuple[list[str], list[str]]:
    on_body = [filter_sql(f, binder) for f in filters if f.path is not None]
    per_copy = [filter_sql(f, binder) for f in filters if f.path is None]
    return on_body, per_copy


def _conditions(funnel: Funnel, parameters: dict[str, Any]) -> _Conditions:
    binder = Binder(parameters, "filter")

    def split_step(name: str, step: Step) -> tuple[str, str | None]:
        on_body, on_copy = _split(step.filters, binder)
        return _all_of([_base_condition(name, step, parameters), *on_body]), _all_of(
            on_copy
        ) if on_copy else None

    steps = [split_step(f"step_{index}", step) for index, step in enumerate(funnel.steps)]
    funnel_body, funnel_copy = _split(funnel.filters, binder)
    if not funnel.include_bots:
        funnel_body.append(NOT_A_BOT)
    exclusions = [split_step(f"exclusion_{index}", e.step) for index, e in enumerate(funnel.exclusions)]
    return _Conditions(
        [body for body, _ in steps],
        [per_copy for _, per_copy in steps],
        _all_of(funnel_body) if funnel_body else None,
        _all_of(funnel_copy) if funnel_copy else None,
        [body for body, _ in exclusions],
        [per_copy for _, per_copy in exclusions],
    )


def step_conditions(funnel: Funnel, parameters: dict[str, Any]) -> list[str]:
    """Each step's condition (with its filters) over the events' columns, its values bound into
    `parameters`."""
    conditions = _conditions(funnel, parameters)
    return [conditions.step(index) for index in range(len(funnel.steps))]


# The mask's bit telling that an event's copy passes the funnel's per-copy filters (steps use 0-19).
_KEPT_BIT = 31
# The bit of the first exclusion (the others follow: 20-24).
_EXCLUSION_BIT = 20
# In the per-day form of an unordered funnel, the bit telling that an event is among the day's
# entries (may start an attempt): its step bits stay, as any of its steps may come later.
_ENTRY_BIT = 30


DAY_MS = 86_400_000


def progress_query(
    database: str,
    funnel: Funnel,
    start: datetime,
    end: datetime,
    sorted_by_person: bool = True,
    per_day: bool = False,
    session_rules: Sessions | None = None,
) -> FunnelQuery:
    """Per person with an event in [start, end) that is the first step: `person`, `level` (steps
    reached), `step_times` (Unix milliseconds of each) and `breakdown` (the breakdown column's value
    at the attributed step; '' without a breakdown), sorted by person unless not
    `sorted_by_person`. `database` is the project's own (hw_<id>), an identifier of ours.

    With `per_day`, a row per UTC day D of [start, end) and person: the funnel of the events of
    [max(start, D), min(end, D + 1 day) + window) whose attempts start in [max(start, D), min(end,
    D + 1 day)) (trend.py); a column `day` (days since 1970) comes first.

    With the unit `sessions`, `person` is a session id: each event belongs to the session of its
    identity (by `session_rules`, the project's) that started last at or before it, when it lies
    within that session's span; other events are left out.

    Filters on the message's body (properties) leave rows out before the copies are reduced to
    one, as every copy agrees on them; filters on per-copy columns are bits of each copy's mask,
    read from the copy chosen."""
    parameters: dict[str, Any] = {"start": start, "end": end, "window_ms": funnel.window_ms}
    conditions = _conditions(funnel, parameters)
    bits = [f"bitShiftLeft(toUInt32({conditions.step(i)}), {i})" for i in range(len(funnel.steps))]
    bits += [
        f"bitShiftLeft(toUInt32({conditions.exclusion(i)}), {_EXCLUSION_BIT + i})"
        for i in range(len(funnel.exclusions))
    ]
    if conditions.funnel_per_copy is not None:
        bits.append(f"bitShiftLeft(toUInt32({conditions.funnel_per_copy}), {_KEPT_BIT})")
    mask = " + ".join(bits)
    key = "person"
    read_end = "{end:DateTime64(3, 'UTC')}"
    if per_day:
        key = "day, person"
        read_end = "{read_end:DateTime64(3, 'UTC')}"
        mask = _entered_that_day(mask, start, end, funnel.window_ms, parameters, funnel.order == "unordered")
    steps = len(funnel.steps)
    only_steps = any_step = ""
    if funnel.order in ("ordered", "unordered"):
        # Rows of no step (nor exclusion) cannot change an ordered funnel. Per-copy filters cannot
        # decide it: a copy failing them may not be the one chosen.
        only_steps = "AND mask != 0"
        if conditions.any_per_copy:
            read = " OR ".join([*conditions.body, *conditions.exclusion_body])
            any_step, only_steps = f", ({read}) AS any_step", "AND any_step"
    funnel_body = "" if conditions.funnel_body is None else f"AND {conditions.funnel_body}"
    # Of the copies of a message, the one of highest rank (received first: COPY_ORDER); then,
    # with per-copy funnel filters, only the messages whose chosen copy passes them.
    chosen = """arrayFilter(
                (c, previous, i) -> i = 1 OR c.1 != previous.1,
                sorted_copies,
                arrayPopBack(arrayPushFront(sorted_copies, sorted_copies[1])),
                arrayEnumerate(sorted_copies)
            )"""
    if conditions.funnel_per_copy is not None:
        chosen = f"arrayFilter(c -> bitTest(c.4, {_KEPT_BIT}), {chosen})"
    order_by = f"ORDER BY {key}" if sorted_by_person else ""
    # The breakdown's value travels with each event, and its value at the attributed step is the
    # person's; without one nothing does.
    value = carried = values = ""
    attributed_value = "''"
    if funnel.breakdown is not None:
        column = breakdown_sql(funnel.breakdown.column, Binder(parameters, "breakdown_key"))
        value, carried = f", toString({column}) AS value", ", value"
        values = ",\n        arrayMap(e -> e.5, events) AS values"
        attributed = "1" if funnel.breakdown.attribution == "first" else "-1"
        attributed_value = f"values[step_events[{attributed}]]"
    if funnel.exclusions or funnel.has_step_options:  # never unordered (definition.py)
        progressed = _per_start(funnel, key, parameters)
    else:
        if funnel.order == "unordered":
            progress = _unordered(steps, per_day)
        else:
            progress = _ordered(steps) if funnel.order == "ordered" else _strict(steps)
        progressed = f"""progressed AS (
    SELECT {key}, {progress},
        arrayMap(index -> times[index], step_events) AS step_times,
        if(level = 0, '', {attributed_value}) AS breakdown
    FROM ordered
)"""
    unit_key, identity, sessions_join = PERSON, "", ""
    if funnel.unit == "sessions":
        unit_key = "s.session_id"
        identity = f", {identity_expression(session_rules or Sessions())} AS session_identity"
        sessions_join = f"""
    ASOF JOIN (
        SELECT identity, session_id, started_at, ended_at FROM `{database}`.sessions FINAL
        WHERE started_at < {read_end} AND ended_at >= {{start:DateTime64(3, 'UTC')}}
    ) AS s ON e.session_identity = s.identity AND e.timestamp >= s.started_at"""
        only_steps += " AND e.timestamp <= s.ended_at"
    sql = f"""
WITH
stored AS (
    SELECT {unit_key} AS person,{" day," if per_day else ""}
        groupArray((message_id, copy_rank, toUnixTimestamp64Milli(timestamp), mask{carried})) AS copies
    FROM (
        SELECT user_id, anonymous_id, message_id, copy_rank, timestamp,
            {mask} AS mask{value}{any_step}{identity}
        FROM `{database}`.events
        WHERE timestamp >= {{start:DateTime64(3, 'UTC')}} AND timestamp < {read_end}
            {funnel_body}
    ) AS e{sessions_join}
    WHERE person != '' {only_steps}
    GROUP BY {key}
),
by_message AS (
    SELECT {key}, arraySort({COPY_ORDER}, copies) AS sorted_copies FROM stored
),
ordered AS (
    SELECT {key},
        arraySort(
            c -> (c.3, c.1),
            {chosen}
        ) AS events,
        arrayMap(e -> e.3, events) AS times,
        arrayMap(e -> e.4, events) AS masks{values}
    FROM by_message
),
{progressed}
SELECT {key}, level, step_times, breakdown FROM progressed WHERE level > 0 {order_by}
"""
    return FunnelQuery(sql, parameters)


def _entered_that_day(
    mask: str, start: datetime, end: datetime, window_ms: int, parameters: dict[str, Any], unordered: bool
) -> str:
    """The per-day form's mask, beside which the row's `day`: each stored copy goes to every day
    whose events it is among (from its own time: the range is taken per copy, as [start, end) is),
    and is the first step there only when it lies within that day's entries. `unordered`: it keeps
    its steps (any of them may come after the attempt's start) and gets the entry bit instead when
    it is a step within the day's entries."""
    start_ms, end_ms = (round(moment.timestamp() * 1000) for moment in (start, end))
    parameters.update(
        read_end=end + timedelta(milliseconds=window_ms),
        start_ms=start_ms,
        end_ms=end_ms,
        first_day=start_ms // DAY_MS,
        last_day=(end_ms - 1) // DAY_MS,
    )
    ms = "toUnixTimestamp64Milli(timestamp)"
    earliest = f"toInt64(floor(({ms} - {{window_ms:Int64}}) / {DAY_MS}))"
    latest = f"toInt64(floor({ms} / {DAY_MS}))"
    days = f"range(greatest({{first_day:Int64}}, {earliest}), least({{last_day:Int64}}, {latest}) + 1)"
    entered = (
        f"{ms} >= greatest({{start_ms:Int64}}, day * {DAY_MS})"
        f" AND {ms} < least({{end_ms:Int64}}, (day + 1) * {DAY_MS})"
    )
    if unordered:
        entry = f"toUInt64({1 << _ENTRY_BIT})"
        that_day = f"if({entered} AND all_steps != 0, bitOr(all_steps, {entry}), all_steps)"
    else:
        that_day = f"if({entered}, all_steps, bitAnd(all_steps, toUInt32(4294967294)))"
    return f"{mask} AS all_steps, arrayJoin({days}) AS day, {that_day}"


def people_query(
    database: str,
    funnel: Funnel,
    start: datetime,
    end: datetime,
    list_of: PeopleList,
    session_rules: Sessions | None = None,
) -> FunnelQuery:
    """The people of `list_of` (those whose attempt took its step, or took the nearest required
    step before it and not it), sorted, after its `after` (keyset pagination), at most its `limit`
    plus one (telling whether a next page exists)."""
    progress = progress_query(
        database, funnel, start, end, sorted_by_person=False, session_rules=session_rules
    )
    if not any(step.optional for step in funnel.steps):
        condition = (
            "level >= {list_step:UInt8}" if list_of.status == "converted" else "level = {list_step:UInt8} - 1"
        )
    else:
        # A skipped optional step's time is _NONE; a required step up to `level` is always taken.
        took = f"(level >= {{list_step:UInt8}} AND step_times[{{list_step:UInt8}}] != {_NONE})"
        condition = (
            took if list_of.status == "converted" else f"level >= {{list_previous:UInt8}} AND NOT {took}"
        )
        if list_of.status == "dropped":
            progress.parameters["list_previous"] = funnel.previous_required(list_of.step)
    parameters = {
        **progress.parameters,
        "list_step": list_of.step,
        "after": list_of.after or "",
        "limit": list_of.limit + 1,
    }
    sql = f"""
SELECT person FROM ({progress.sql})
WHERE {condition} AND person > {{after:String}}
ORDER BY person
LIMIT {{limit:UInt32}}
"""
    return FunnelQuery(sql, parameters)


def summary_query(
    database: str, funnel: Funnel, start: datetime, end: datetime, session_rules: Sessions | None = None
) -> FunnelQuery:
    """One row: summary.summary_items over every person's progress."""
    progress = progress_query(
        database, funnel, start, end, sorted_by_person=False, session_rules=session_rules
    )
    items = ",\n    ".join(summary_items(funnel))
    return FunnelQuery(f"SELECT\n    {items}\nFROM ({progress.sql})", progress.parameters)


def _ordered(steps: int) -> str:
    """level and step_events (the indexes of the reported attempt's events). `reach_k` holds, after
    each event, the start (index and time) of the latest-starting attempt that has reached step k
    so far ((0, 0) when none has). An event of step k takes over the attempt that had reached k - 1
    just before it, when that attempt's window still holds it; otherwise `reach_k` keeps its last
    value (arrayFill). The deepest step's attempt is then retraced from its start, each step at the
    first event after the previous one that fills it (the events the passes took: an attempt is
    extended at the first such event, and a later start taking over an earlier step would reach at
    least as deep). A later start is never worse (more of its window remains), so the latest is
    the one to keep, and `reach_k` only moves to later starts.

    One pass per step over the whole array, each comparing an event with the state before it
    through a shifted array, replaced one fold over the events whose state was an array of steps:
    the whole query 3.64 s against 4.44 s, and 1.58 s against 2.29 s without the copies'
    reduction (bench/funnels.py's 10M events, idle, side by side: docs/benchmarks.md)."""
    window = "{window_ms:Int64}"
    items = [
        "arrayFill(a -> a.1 > 0, arrayMap((m, i, t) -> if(bitTest(m, 0), (i, t), (0, 0)),"
        " masks, arrayEnumerate(masks), times)) AS reach_1"
    ]
    for k in range(2, steps + 1):
        before = f"arrayPopBack(arrayPushFront(reach_{k - 1}, (0, 0)))"
        extends = f"bitTest(m, {k - 1}) AND a.1 > 0 AND t - a.2 <= {window}"
        items.append(
            f"arrayFill(a -> a.1 > 0, arrayMap((m, t, a) -> if({extends}, a, (0, 0)),"
            f" masks, times, {before})) AS reach_{k}"
        )
    # An array's element -1 is its last; (0, 0) when it is empty.
    starts = ", ".join(f"reach_{k}[-1].1" for k in range(1, steps + 1))
    items += [
        f"[{starts}] AS reached_from",
        "arrayCount(start -> start > 0, reached_from) AS level",
        "reached_from[greatest(level, 1)] AS event_of_step_1",
    ]
    retrace = [
        f"arrayFirstIndex((m, j) -> j > event_of_step_{k - 1} AND bitTest(m, {k - 1}),"
        f" masks, arrayEnumerate(masks)) AS event_of_step_{k}"
        for k in range(2, steps + 1)
    ]
    indexes = ", ".join(f"event_of_step_{k}" for k in range(1, steps + 1))
    return ",\n        ".join([*items, *retrace, f"arraySlice([{indexes}], 1, level) AS step_events"])


def _strict(steps: int) -> str:
    """level and step_events, step by step over the whole array: `reach_k` holds, per event, the
    start time of the attempt that fills steps 1..k with it and the k - 1 events right before it
    (_NONE when there is none); the deepest attempt starting last is the last event of the deepest
    non-empty `reach_k`. Each pass compares an event with the one before through a shifted array
    (a lambda indexing a captured array copies that array once per element: 3.3x slower)."""
    items = [f"arrayMap((m, t) -> if(bitTest(m, 0), t, {_NONE}), masks, times) AS reach_1"]
    for k in range(2, steps + 1):
        extends = f"bitTest(m, {k - 1}) AND start != {_NONE} AND t - start <= {{window_ms:Int64}}"
        previous = f"arrayPopBack(arrayPushFront(reach_{k - 1}, {_NONE}))"
        items.append(
            f"arrayMap((m, t, start) -> if({extends}, start, {_NONE}), masks, times, {previous}) AS reach_{k}"
        )
    ends = ", ".join(f"arrayLastIndex(start -> start != {_NONE}, reach_{k})" for k in range(1, steps + 1))
    items += [
        f"[{ends}] AS ends",
        "arrayCount(end -> end > 0, ends) AS level",
        "toUInt64(ends[greatest(level, 1)] + 1) AS after_last",
        "if(level = 0, [], range(toUInt64(after_last - level), after_last)) AS step_events",
    ]
    return ",\n        ".join(items)


def _unordered(steps: int, per_day: bool) -> str:
    """level and step_events in `unordered` order: an attempt per event that fills any step (per
    day, only those of the day's entries: the entry bit), over it and the events after it within
    the window, keeping an event when it and the events kept so far can each fill a different
    step. The kept events, in order, are the attempt's steps; the deepest attempt, starting last,
    is the person's (`attempts`: per start its kept events, 0 for the steps it did not reach).

    A person none of whose events fills two steps takes _one_step_each (every attempt at once from
    each step's next event); the others _matched (a fold per attempt keeping a matching, exact when
    events fill several steps). Both are computed for everyone, but the second over no attempt for
    the first kind, so a funnel whose steps never overlap costs about what `strict` costs."""
    every = (1 << steps) - 1
    may_start = f"bitAnd(m, {every}) != 0"
    if per_day:
        may_start += f" AND bitTest(m, {_ENTRY_BIT})"
    return ",\n        ".join(
        [
            f"arrayAll(m -> bitCount(bitAnd(m, {every})) <= 1, masks) AS one_step_each",
            _one_step_each(steps, may_start),
            f"arrayFilter((j, m) -> NOT one_step_each AND {may_start}, arrayEnumerate(masks), masks)"
            " AS starts",
            _matched(steps),
            "if(one_step_each, simple_attempts, matched_attempts) AS attempts",
            "arrayMap(o -> arrayCount(e -> e > 0, o), attempts) AS levels",
            "arrayMax(arrayPushBack(levels, 0)) AS level",
            "if(level = 0, [], arraySort(arrayFilter(e -> e > 0,"
            " attempts[arrayLastIndex(l -> l = level, levels)]))) AS step_events",
        ]
    )


def _one_step_each(steps: int, may_start: str) -> str:
    """`simple_attempts` (_unordered) where no event fills two steps: an attempt then keeps, per
    step, the first event of the step within its window (an event of a step not yet filled can
    always be kept). `next_k` holds per event the (index, time) of the first event from it on that
    fills step k ((0, 0) when none): a reverse fill, so every attempt is read off the arrays at its
    start, linear in the person's events, without lambdas indexing captured arrays."""
    items = [
        f"arrayReverseFill(e -> e.1 > 0, arrayMap((m, j, t) -> if(bitTest(m, {k - 1}), (j, t), (0, 0)),"
        f" masks, arrayEnumerate(masks), times)) AS next_{k}"
        for k in range(1, steps + 1)
    ]
    names = ", ".join(f"n{k}" for k in range(1, steps + 1))
    nexts = ", ".join(f"next_{k}" for k in range(1, steps + 1))
    reached = ", ".join(
        f"if(n{k}.1 > 0 AND n{k}.2 - t <= {{window_ms:Int64}}, toUInt32(n{k}.1), 0)"
        for k in range(1, steps + 1)
    )
    items.append(
        f"arrayMap((j, m, t, {names}) -> if({may_start}, [{reached}], []),"
        f" arrayEnumerate(masks), masks, times, {nexts}) AS simple_attempts"
    )
    return ",\n        ".join(items)


def _matched(steps: int) -> str:
    """`matched_attempts` (_unordered): per start of `starts`, one fold over the events of its
    window. Its state is a matching of the kept events to steps: per step the kept event holding it
    (`owner`, 0 when free) and that event's steps (`held`), and the held steps' bits (`taken`). An
    event with a free step of its own takes it; else an augmenting path is searched (_augmented),
    and the event is kept when there is one. That is exact when an event fills several steps
    (overlapping globs, one name with different filters), where taking free steps first-come
    would refuse an event that fits once a holder moves. Every attempt against every event of its
    window: quadratic in a person's events, as _per_start."""
    # How many events from the start lie within the window (the times are sorted).
    within = "arrayCount(t -> t - times[s] <= {window_ms:Int64}, arraySlice(times, s))"
    matching = "Tuple(Array(UInt32), Array(UInt64), UInt64)"
    nothing = f"CAST((arrayResize([], {steps}, 0), arrayResize([], {steps}, 0), 0), '{matching}')"
    # The events and masks are the fold's arrays, not read from captured ones: a lambda indexing a
    # captured array copies it once per element (see _strict).
    return f"""arrayMap(
            s -> arrayFold(
                (acc, j, m) -> {_kept(steps)},
                arraySlice(arrayEnumerate(masks), s, {within}),
                arraySlice(masks, s, {within}),
                {nothing}
            ).1,
            starts
        ) AS matched_attempts"""


def _bit(step: str) -> str:
    """The bit of a 1-based step (a shift by a signed amount would make it signed)."""
    return f"bitShiftLeft(toUInt64(1), toUInt8({step} - 1))"


def _kept(steps: int) -> str:
    """The fold's step for event `j` of mask `m` over the matching `acc` = (owner, held, taken)
    (_unordered): the matching with `j` in it when it can be, else `acc`."""
    every = (1 << steps) - 1
    indexes = f"range(1, {steps + 1})"
    own = f"bitAnd(toUInt64(m), {every})"
    free = f"bitAnd({own}, bitNot(acc.3))"
    # Its lowest free step, x.
    direct = (
        f"(arrayMap((o, k) -> if(k = x, j, o), acc.1, {indexes}),"
        f" arrayMap((h, k) -> if(k = x, {own}, h), acc.2, {indexes}),"
        f" bitOr(acc.3, {_bit('x')}))"
    )
    lowest = f"arrayFirstIndex(k -> bitTest({free}, k - 1), {indexes})"
    # Both branches of an `if` are computed (no short-circuit inside a lambda), so each branch's
    # work maps over an array that is empty unless the branch is taken (arrayMap over [] then
    # [1]: a default, discarded): the direct step when the event has a free step of its own, the
    # search when it is a step, none of its own is free and some step is (`blocked`). Without
    # this a fold over 200k events of 20k people took 5.0 s instead of 2.3 s.
    blocked = f"{own} != 0 AND {free} = 0 AND acc.3 != {every}"
    return (
        f"if({own} = 0 OR acc.3 = {every}, acc,"
        f" if({free} != 0, arrayMap(x -> {direct}, if({free} != 0, [{lowest}], []))[1],"
        f" {_augmented(steps, blocked)}))"
    )


def _augmented(steps: int, blocked: str) -> str:
    """`acc` (owner, held, taken) with event `j` (mask `m`) matched through an augmenting path when
    one exists, else `acc` (_unordered). A breadth-first search over the steps, at most `steps`
    rounds, its state (visited, frontier, parent per step, found): the first frontier is the
    event's own steps (parent 0); each round's new steps are those the holders of the frontier's
    steps also fill, each one's parent the first frontier step whose holder does; it stops at a new
    step nobody holds (`found`). Then along the path from `found` back to a parent-0 step, each
    step goes to its parent's holder, and the parent-0 step to `j`. Unless `blocked`, the search
    has no rounds and nothing is mapped (the caller discards the result)."""
    indexes = f"range(1, {steps + 1})"
    own = f"bitAnd(toUInt64(m), {(1 << steps) - 1})"
    # A round from `b` where `x` is the steps reached beyond the visited ones.
    parents = (
        "arrayMap((p, t) -> if(bitTest(x, t - 1), toUInt8(arrayFirstIndex("
        f"(h, k) -> bitTest(b.2, k - 1) AND bitTest(h, t - 1), acc.2, {indexes})), p), b.3, {indexes})"
    )
    found = f"toUInt8(arrayFirstIndex(t -> bitTest(bitAnd(x, bitNot(acc.3)), t - 1), {indexes}))"
    beyond = (
        "bitAnd(arrayFold((bits, h, k) -> if(bitTest(b.2, k - 1), bitOr(bits, h), bits),"
        f" acc.2, {indexes}, toUInt64(0)), bitNot(b.1))"
    )
    search = (
        "arrayFold((b, r) -> if(b.4 > 0 OR b.2 = 0, b,"
        f" arrayMap(x -> (bitOr(b.1, x), x, {parents}, {found}), [{beyond}])[1]),"
        f" range(if({blocked}, {steps}, 0)),"
        f" CAST(({own}, {own}, arrayResize([], {steps}, 0), 0),"
        " 'Tuple(UInt64, UInt64, Array(UInt8), UInt8)'))"
    )
    # The steps of the path, back from `found` (as bits).
    path = (
        f"arrayFold((c, r) -> if(c.1 = 0, c, (q.3[c.1], bitOr(c.2, {_bit('c.1')}))),"
        f" range(if(q.4 > 0, {steps}, 0)), CAST((q.4, 0), 'Tuple(UInt8, UInt64)')).2"
    )
    flipped = (
        "(arrayMap((o, p, t) -> if(bitTest(v, t - 1), if(p = 0, j, acc.1[p]), o),"
        f" acc.1, q.3, {indexes}),"
        f" arrayMap((h, p, t) -> if(bitTest(v, t - 1), if(p = 0, {own}, acc.2[p]), h),"
        f" acc.2, q.3, {indexes}),"
        f" bitOr(acc.3, {_bit('q.4')}))"
    )
    # arrayMap over a one-element array binds a name (q: the search, v: its path) for the rest.
    return (
        f"arrayMap(q -> if(q.4 = 0, acc, arrayMap(v -> {flipped}, if(q.4 > 0, [{path}], []))[1]),"
        f" if({blocked}, [{search}], []))[1]"
    )


def _per_start(funnel: Funnel, key: str, parameters: dict[str, Any]) -> str:
    """The `progressed` CTE for funnels with exclusions, optional steps or step windows: a row per
    start (`start_event`: an event that is the first step; ARRAY JOIN) builds that start's attempt
    as docs/funnels.md defines it, and the person's is the best of the rows not void (the deepest,
    then taking most steps, then starting last). Per start, three folds (quadratic in a person's
    events, so plain funnels keep _ordered and _strict):

    1. forward over the events, per step the latest time at which a chain from the start can take
       it (the latest is the best for a step window after it): an event takes step k when it fills
       k within the window from the start, and a step k may follow (k - 1, and on down past
       optional steps to the nearest required one) has a time before it (in `strict` order: the
       event right before it) at most k's own window earlier. `level`: the deepest step with one.
    2. backward, per event a bitmask of the steps it can take from which `level` can still be
       reached, keeping per step the earliest such time (the best for a step window before it).
    3. over the steps, the pick: the first event after the last step taken (in `strict` order, the
       very next one) in step k's bitmask and within k's own window of that step; none: k skipped
       (only ever an optional step). `chain`: each step's event index, 0 when skipped or beyond.

    With exclusions only, the pick alone: each step at the first event filling it (no look-ahead).

    Folds, not an arrayMap per step over whole arrays: ClickHouse expands an alias wherever it is
    used, and arrays per step referring to several steps before them (past optional ones) grow the
    query tree exponentially. Layered in subqueries, that form ran the bench's 5-step funnel with
    an optional step at 2x the plain funnel's time where this takes 4x, but a 20-step funnel over
    30 events took 7.6 s (the expanded tree's planning) where this takes 0.7 s; a fold's state is
    one alias. An attempt is void when an exclusion's event other than its own steps' comes after
    its from_step event and before its to_step event, or, not having reached to_step, at most the
    window after its first step (both are required steps: taken whenever reached)."""
    steps = len(funnel.steps)
    strict = funnel.order == "strict"
    window = "{window_ms:Int64}"
    required = [not step.optional for step in funnel.steps]
    own = []
    for k, step in enumerate(funnel.steps, 1):
        if step.window_ms is None:
            own.append("0")
        else:
            parameters[f"step_window_{k}"] = step.window_ms
            own.append(f"{{step_window_{k}:Int64}}")
    # Per step k: the lowest step k may follow (the nearest required before it), and the highest
    # that may follow k (the nearest required after it).
    lowest = [1] + [max(j for j in range(1, k) if required[j - 1]) for k in range(2, steps + 1)]
    highest = [
        min((j for j in range(k + 1, steps + 1) if required[j - 1]), default=steps)
        for k in range(1, steps + 1)
    ]
    windows, lows, highs = (f"[{', '.join(map(str, values))}]" for values in (own, lowest, highest))
    all_steps = f"range(1, {steps + 1})"
    first_only = f"arrayMap(k -> if(k = 1, start_time, {_NONE}), {all_steps})"

    def follows(state: str) -> str:
        return (
            f"arrayExists(p -> {state}[p] != {_NONE}"
            f" AND ({windows}[k] = 0 OR t - {state}[p] <= {windows}[k]),"
            f" range({lows}[k], k))"
        )

    takes = f"k > 1 AND bitTest(m, k - 1) AND t - start_time <= {window}"
    if strict:
        advance = f"arrayMap(k -> if({takes} AND {follows('acc.1')}, t, {_NONE}), {all_steps})"
        forward = f"""arrayFold(
                (acc, m, t, j) -> if(j <= start_event, acc, arrayMap(
                    now -> (now, greatest(acc.2, arrayLastIndex(x -> x != {_NONE}, now))), [{advance}]
                )[1]),
                masks, times, arrayEnumerate(times), ({first_only}, toUInt64(1))
            ).2 AS level"""
    else:
        advance = f"arrayMap(k -> if({takes} AND {follows('acc')}, t, acc[k]), {all_steps})"
        forward = f"""arrayFold(
                (acc, m, t, j) -> if(j <= start_event, acc, {advance}),
                masks, times, arrayEnumerate(times), {first_only}
            ) AS forward,
            arrayLastIndex(x -> x != {_NONE}, forward) AS level"""
    onward = (
        f"arrayExists(q -> acc.1[q] != {_NONE} AND ({windows}[q] = 0 OR acc.1[q] - t <= {windows}[q]),"
        f" range(k + 1, {highs}[k] + 1))"
    )
    bits = (
        f"toUInt32(arraySum(arrayMap(k -> if(k <= level AND {takes} AND j > start_event AND (k = level OR"
        f" {onward}), bitShiftLeft(toUInt32(1), k - 1), toUInt32(0)), {all_steps})))"
    )
    keep = _NONE if strict else "acc.1[k]"
    backward = f"""arrayReverse(arrayFold(
                (acc, m, t, j) -> arrayMap(
                    b -> (
                        arrayMap(k -> if(bitTest(b, k - 1), t, {keep}), {all_steps}),
                        arrayPushBack(acc.2, b)
                    ),
                    [{bits}]
                )[1],
                arrayReverse(masks), arrayReverse(times), arrayReverse(arrayEnumerate(times)),
                (arrayResize(CAST([] AS Array(Int64)), {steps}, {_NONE}), CAST([] AS Array(UInt32)))
            ).2) AS ahead"""
    within = f"({windows}[k] = 0 OR t - acc.2 <= {windows}[k])"
    if strict:
        pick = (
            f"if(acc.1 < length(times) AND bitTest(ahead[acc.1 + 1], k - 1)"
            f" AND ({windows}[k] = 0 OR times[acc.1 + 1] - acc.2 <= {windows}[k]), acc.1 + 1, 0)"
        )
    else:
        pick = (
            f"arrayFirstIndex((a, t, j) -> bitTest(a, k - 1) AND j > acc.1 AND {within},"
            " ahead, times, arrayEnumerate(times))"
        )
    passes = [forward, backward]
    if not funnel.has_step_options:
        # Exclusions only: each step at the first event after the previous step's that fills it
        # within the window (the same attempt by the definition: tests/test_funnels_query.py),
        # no look-ahead needed; the folds over the events took 1.5 s where this takes 0.3 s
        # (a 5-step funnel with an exclusion over the bench's 200,000 events).
        if strict:
            pick = (
                f"if(acc.3[k - 1] > 0 AND acc.1 < length(times) AND bitTest(masks[acc.1 + 1], k - 1)"
                f" AND times[acc.1 + 1] - start_time <= {window}, acc.1 + 1, 0)"
            )
        else:
            pick = (
                f"if(acc.3[k - 1] > 0, arrayFirstIndex((m, t, j) -> bitTest(m, k - 1) AND j > acc.1"
                f" AND t - start_time <= {window}, masks, times, arrayEnumerate(times)), 0)"
            )
        passes = ["arrayCount(e -> e > 0, chain) AS level"]
    greedy = f"""arrayFold(
                (acc, k) -> arrayMap(
                    e -> if(
                        e > 0, (e, times[e], arrayPushBack(acc.3, e)), (acc.1, acc.2, arrayPushBack(acc.3, e))
                    ),
                    [toUInt64({pick})]
                )[1],
                range(2, {steps + 1}), (toUInt64(start_event), start_time, [toUInt64(start_event)])
            ).3 AS chain"""
    items = [
        "arraySlice(chain, 1, level) AS step_events",
        "arrayCount(e -> e > 0, step_events) AS taken",
        f"arrayMap(e -> if(e = 0, {_NONE}, times[e]), step_events) AS step_times",
    ]
    breakdown = funnel.breakdown
    if breakdown is None:
        items.append("'' AS breakdown")
    else:
        items.append(
            f"values[{'start_event' if breakdown.attribution == 'first' else 'chain[level]'}] AS breakdown"
        )
    voids = []
    for number, exclusion in enumerate(funnel.exclusions):
        start, end = exclusion.from_step, exclusion.to_step
        inside = f"if(chain[{end}] > 0, j < chain[{end}], t - start_time <= {window})"
        voids.append(
            f"(chain[{start}] > 0 AND arrayExists((m, t, j) -> bitTest(m, {_EXCLUSION_BIT + number})"
            f" AND j > chain[{start}] AND {inside} AND NOT has(chain, j),"
            " masks, times, arrayEnumerate(times)))"
        )
    kept = ""
    built = ",\n            ".join(passes)
    if voids:
        items.append(f"{' OR '.join(voids)} AS void")
        kept = "\n        WHERE NOT void"
    computed = ",\n        ".join(items)
    values = ", values" if breakdown is not None else ""
    return f"""attempts AS (
    SELECT {key}, start_event, level,
        {computed}
    FROM (
        SELECT {key}, times, masks{values}, start_event, times[start_event] AS start_time,
            {built},
            {greedy}
        FROM ordered
        ARRAY JOIN arrayFilter((j, m) -> bitTest(m, 0), arrayEnumerate(masks), masks) AS start_event
    )
),
progressed AS (
    SELECT {key}, attempt.1 AS level, attempt.2 AS step_times, attempt.3 AS breakdown
    FROM (
        SELECT {key}, argMax((level, step_times, breakdown), (level, taken, start_event)) AS attempt
        FROM attempts{kept}
        GROUP BY {key}
    )
)"""


def breakdown_query(
    database: str, funnel: Funnel, start: datetime, end: datetime, session_rules: Sessions | None = None
) -> FunnelQuery:
    """A row per breakdown value: `is_total` (0), `is_other`, `value` and summary.summary_items,
    for the top `limit` values by people (ties in byte order of the value), then one row for all
    the others when there are any; and first, when anyone is in the funnel, the row of everyone
    (`is_total` 1: summary_query's answer). One pass over the people: the summary's aggregate
    states per value, merged into the others' row and into everyone's (a second reference to the
    people's progress, or a second query, would compute it again)."""
    assert funnel.breakdown is not None
    progress = progress_query(
        database, funnel, start, end, sorted_by_person=False, session_rules=session_rules
    )
    states = ",\n        ".join(summary_state_items(funnel))
    merged = ",\n    ".join(summary_merge_items(funnel))
    sql = f"""
SELECT is_total, if(is_total, 0, is_other) AS group_other, if(is_total, '', value) AS group_value,
    {merged}
FROM (
    SELECT *,
        row_number() OVER (ORDER BY people DESC, breakdown) > {{breakdown_limit:UInt32}} AS is_other,
        if(is_other, '', breakdown) AS value
    FROM (
        SELECT breakdown, count() AS people,
            {states}
        FROM ({progress.sql})
        GROUP BY breakdown
    )
)
ARRAY JOIN [1, 0] AS is_total
GROUP BY is_total, group_other, group_value
ORDER BY is_total DESC, group_other, reached_1 DESC, group_value
"""
    return FunnelQuery(sql, {**progress.parameters, "breakdown_limit": funnel.breakdown.limit})
