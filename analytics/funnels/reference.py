"""The reference funnel: the definitions of docs/funnels.md in plain Python, written to be obviously
correct rather than fast. It is the oracle the ClickHouse query (query.py) is tested against;
nothing in production calls it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from headwater.core.migrations.copy_rank import copy_rank

from .definition import Funnel, PeopleList, Step
from .filters import FILTER_COLUMNS, Filter, breakdown_value, matches


@dataclass(frozen=True, slots=True)
class FunnelEvent:
    """One stored row of `events`, with the columns a funnel reads (a retried message has several)."""

    message_id: str
    type: str
    event: str
    anonymous_id: str
    user_id: str
    timestamp: datetime
    received_at: datetime
    request_id: str
    page_path: str = ""
    # The other columns a funnel can filter or break down by (filters.FILTER_COLUMNS).
    browser: str = ""
    os: str = ""
    device_type: str = ""
    country: str = ""
    referrer_host: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    properties: str = ""  # JSON
    is_bot: bool = False

    def columns(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in FILTER_COLUMNS}

    def passes(self, filters: tuple[Filter, ...]) -> bool:
        columns = self.columns()
        return all(matches(f, columns, self.properties) for f in filters)

    def is_step(self, step: Step) -> bool:
        return step.matches(self.event, self.type, self.page_path) and self.passes(step.filters)


@dataclass(frozen=True, slots=True)
class Progress:
    """How far one person got: the last step of their attempt, and when each step up to it was
    (Unix milliseconds; None for an optional step the attempt skipped)."""

    person: str
    level: int
    step_times: tuple[int | None, ...]
    breakdown: str = ""  # the breakdown column's value at the attributed step ('' without one)


def milliseconds(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def person_of(event: FunnelEvent) -> str:
    return event.user_id or event.anonymous_id


@dataclass(frozen=True, slots=True)
class SessionSpan:
    """A row of the sessions table, as a funnel by sessions reads it."""

    identity: str
    session_id: str
    started_at: datetime
    ended_at: datetime


def session_of(spans: Iterable[SessionSpan], identity_rule: str) -> Callable[[FunnelEvent], str]:
    """The unit of a funnel by sessions: an event's session is the one of its identity (by the
    project's rule: `anonymous_id` or `user_id` first) that started last at or before it, when the
    event lies within its span; else none ('')."""
    by_identity: dict[str, list[SessionSpan]] = {}
    for span in spans:
        by_identity.setdefault(span.identity, []).append(span)
    for identity_spans in by_identity.values():
        identity_spans.sort(key=lambda span: span.started_at)

    def unit(event: FunnelEvent) -> str:
        first, second = (
            (event.anonymous_id, event.user_id)
            if identity_rule == "anonymous_id"
            else (event.user_id, event.anonymous_id)
        )
        before = [s for s in by_identity.get(first or second, []) if s.started_at <= event.timestamp]
        return before[-1].session_id if before and event.timestamp <= before[-1].ended_at else ""

    return unit


def people(
    events: Iterable[FunnelEvent],
    start: datetime,
    end: datetime,
    unit_of: Callable[[FunnelEvent], str] = person_of,
    include_bots: bool = False,
) -> dict[str, list[FunnelEvent]]:
    """Each person's events (or each unit's: `unit_of`) with a timestamp in [start, end), one per
    message id (its copy of highest rank, received first: core/migrations/copy_rank.py), in order
    of (timestamp, message id). Bots' copies are left out first, unless `include_bots`."""
    chosen: dict[tuple[str, str], FunnelEvent] = {}
    for event in events:
        person = unit_of(event)
        if not person or not start <= event.timestamp < end or (event.is_bot and not include_bots):
            continue
        key = (person, event.message_id)
        kept = chosen.get(key)
        if kept is None or copy_rank(event.received_at, event.request_id) > copy_rank(
            kept.received_at, kept.request_id
        ):
            chosen[key] = event
    by_person: dict[str, list[FunnelEvent]] = {}
    for (person, _), event in chosen.items():
        by_person.setdefault(person, []).append(event)
    for person_events in by_person.values():
        person_events.sort(key=lambda e: (milliseconds(e.timestamp), e.message_id))
    return by_person


def progress(
    funnel: Funnel, events: Sequence[FunnelEvent], entry: tuple[int, int] | None = None
) -> tuple[int, tuple[int | None, ...], str]:
    """One person's attempt: among the attempts no exclusion voids, the one reaching furthest, then
    taking most steps, then starting last; as (its last step, the time of each step up to it: None
    for an optional step it skipped, the breakdown value); (0, (), "") when no event is the first
    step or every attempt is void. With `entry` (Unix milliseconds), only attempts starting in
    [entry[0], entry[1])."""
    if funnel.order == "unordered":
        return unordered_progress(funnel, events, entry)
    times = [milliseconds(e.timestamp) for e in events]
    fills = [[e.is_step(step) for step in funnel.steps] for e in events]
    excludes = [[e.is_step(exclusion.step) for exclusion in funnel.exclusions] for e in events]
    attempt_of = best_chain if funnel.has_step_options else first_events
    best: tuple[int, int, int, Chain] = (0, 0, -1, [])  # level, steps taken, start, the chain
    for start in range(len(events)):
        if not fills[start][0] or (entry is not None and not entry[0] <= times[start] < entry[1]):
            continue
        chain = attempt_of(funnel, start, times, fills)
        if _void(funnel, chain, times, excludes):
            continue
        taken = sum(1 for index in chain if index is not None)
        if (len(chain), taken, start) > best[:3]:
            best = (len(chain), taken, start, chain)
    level, _, _, chain = best
    breakdown = funnel.breakdown
    value = ""
    if breakdown is not None and chain:
        attributed = chain[0] if breakdown.attribution == "first" else chain[-1]
        assert attributed is not None  # a chain's first and last steps are taken
        value = breakdown_value(breakdown.column, events[attributed].columns(), events[attributed].properties)
    return level, tuple(None if index is None else times[index] for index in chain), value


def unordered_progress(
    funnel: Funnel, events: Sequence[FunnelEvent], entry: tuple[int, int] | None = None
) -> tuple[int, tuple[int, ...], str]:
    """progress() in `unordered` order: an attempt per event that fills any step (with `entry`,
    only those in [entry[0], entry[1])), over it and the events after it at most the window after
    it. Its events are kept one by one in order while the kept ones can still each fill a different
    step (matchable); how many it keeps is its level, the largest number of its events that can
    each fill a different step. The deepest attempt, starting last, is the person's; its kept
    events' times are its step times."""
    times = [milliseconds(e.timestamp) for e in events]
    fills = [[e.is_step(step) for step in funnel.steps] for e in events]
    best: tuple[int, int, list[int]] = (0, -1, [])  # level, start, the kept events
    for start in range(len(events)):
        if not any(fills[start]) or (entry is not None and not entry[0] <= times[start] < entry[1]):
            continue
        kept = unordered_attempt(fills, times, start, funnel.window_ms)
        if (len(kept), start) > best[:2]:
            best = (len(kept), start, kept)
    level, _, kept = best
    breakdown = funnel.breakdown
    value = ""
    if breakdown is not None and kept:
        attributed = events[kept[0] if breakdown.attribution == "first" else kept[-1]]
        value = breakdown_value(breakdown.column, attributed.columns(), attributed.properties)
    return level, tuple(times[index] for index in kept), value


def unordered_attempt(
    fills: Sequence[Sequence[bool]], times: Sequence[int], start: int, window_ms: int
) -> list[int]:
    """The events an unordered attempt from `start` keeps (indexes, in order): each event from
    `start` on, at most `window_ms` after it, kept when it and the events kept before it can each
    fill a different step (`fills[event][step]`)."""
    kept: list[int] = []
    for index in range(start, len(times)):
        if times[index] - times[start] > window_ms:
            break
        if matchable([fills[event] for event in [*kept, index]]):
            kept.append(index)
    return kept


def matchable(rows: Sequence[Sequence[bool]]) -> bool:
    """Whether every row (an event: which steps it fills) can fill a step of its own: a matching of
    them all, built row by row, each row taking a free step it fills or one whose holder can move
    to another step it fills (an augmenting path, searched depth first: Kuhn's algorithm)."""
    holder: dict[int, int] = {}  # step -> the row filling it

    def place(row: int, seen: set[int]) -> bool:
        for step, fills in enumerate(rows[row]):
            if fills and step not in seen:
                seen.add(step)
                if step not in holder or place(holder[step], seen):
                    holder[step] = row
                    return True
        return False

    return all(place(row, set()) for row in range(len(rows)))


# An attempt: per step from the first to its last, the index of the event taking it (None: an
# optional step skipped).
Chain = list[int | None]


def first_events(funnel: Funnel, start: int, times: list[int], fills: list[list[bool]]) -> Chain:
    """The attempt of a funnel without optional steps or step windows: each step at the first event
    after the previous step's that fills it within the window (in `strict` order, the very next
    event), up to the first step no event fills."""
    chain: Chain = [start]
    last = start
    for step in range(1, len(funnel.steps)):
        following = range(last + 1, len(times))
        if funnel.order == "strict":
            following = range(last + 1, min(last + 2, len(times)))
        found = next(
            (
                index
                for index in following
                if fills[index][step] and times[index] - times[start] <= funnel.window_ms
            ),
            None,
        )
        if found is None:
            break
        chain.append(found)
        last = found
    return chain


def chains(funnel: Funnel, start: int, times: list[int], fills: list[list[bool]]) -> Iterator[Chain]:
    """Every chain from `start` (docs/funnels.md, "Definitions"): steps taken in increasing order
    by increasing events (in `strict` order each the very next event after the previous one), a
    step left out only when it is optional, each event filling its step at most the window after
    the start and, for a step with a window of its own, at most that long after the previous step
    taken. Every prefix of a chain is one too."""
    steps = funnel.steps

    def extend(chain: Chain, last: int) -> Iterator[Chain]:
        yield chain
        for step in range(len(chain), len(steps)):
            end = min(last + 2, len(times)) if funnel.order == "strict" else len(times)
            for index in range(last + 1, end):
                within = times[index] - times[start] <= funnel.window_ms
                own = steps[step].window_ms
                if fills[index][step] and within and (own is None or times[index] - times[last] <= own):
                    yield from extend([*chain, *[None] * (step - len(chain)), index], index)
            if not steps[step].optional:
                break

    yield from extend([start], start)


def best_chain(funnel: Funnel, start: int, times: list[int], fills: list[list[bool]]) -> Chain:
    """The start's attempt, by the definition: of its chains, those reaching the deepest step; of
    those, the first by its steps in order, a step taken before one skipped, then by an earlier
    event."""
    every = list(chains(funnel, start, times, fills))
    level = max(len(chain) for chain in every)
    return min(
        (chain for chain in every if len(chain) == level),
        key=lambda chain: [(0, index) if index is not None else (1, 0) for index in chain],
    )


def _void(funnel: Funnel, chain: Chain, times: list[int], excludes: list[list[bool]]) -> bool:
    """Whether an event of an exclusion, not one of the attempt's steps, comes after the attempt's
    `from_step` event and before its `to_step` event; or, when the attempt did not reach to_step,
    after its from_step event and at most the window after its first step. (Both are required
    steps: taken whenever the attempt reaches them.)"""
    for number, exclusion in enumerate(funnel.exclusions):
        if len(chain) < exclusion.from_step:
            continue
        after = chain[exclusion.from_step - 1]
        start = chain[0]
        assert after is not None and start is not None
        if len(chain) >= exclusion.to_step:
            before = chain[exclusion.to_step - 1]
            assert before is not None
            between = list(range(after + 1, before))
        else:
            between = [
                index
                for index in range(after + 1, len(times))
                if times[index] - times[start] <= funnel.window_ms
            ]
        if any(excludes[index][number] and index not in chain for index in between):
            return True
    return False


def funnel_progress(
    funnel: Funnel,
    events: Iterable[FunnelEvent],
    start: datetime,
    end: datetime,
    entry: tuple[datetime, datetime] | None = None,
    unit_of: Callable[[FunnelEvent], str] = person_of,
) -> list[Progress]:
    """Every person (or unit: `unit_of`) with an attempt (an event in [start, end) that is the
    funnel's first step) no exclusion voids, sorted. Events whose chosen copy fails the funnel's
    filters are left out. With `entry`, only attempts starting in [entry[0], entry[1])."""
    result = []
    entry_ms = None if entry is None else (milliseconds(entry[0]), milliseconds(entry[1]))
    for person, person_events in sorted(people(events, start, end, unit_of, funnel.include_bots).items()):
        kept = [event for event in person_events if event.passes(funnel.filters)]
        level, step_times, value = progress(funnel, kept, entry_ms)
        if level:
            result.append(Progress(person, level, step_times, value))
    return result


def took(row: Progress, step: int) -> bool:
    """Whether the person's attempt took `step` (1-based)."""
    return row.level >= step and row.step_times[step - 1] is not None


def people_page(funnel: Funnel, progress: Sequence[Progress], list_of: PeopleList) -> tuple[list[str], bool]:
    """The page of `list_of` from everyone's progress, and whether another page follows."""
    step = list_of.step
    if list_of.status == "converted":
        matching = [row.person for row in progress if took(row, step)]
    else:
        previous = funnel.previous_required(step)
        matching = [row.person for row in progress if took(row, previous) and not took(row, step)]
    after = sorted(person for person in matching if person > (list_of.after or ""))
    return after[: list_of.limit], len(after) > list_of.limit
