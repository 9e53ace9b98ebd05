"""The reference journeys: source.py's definition in plain Python, written to be obviously correct
rather than fast. It is the oracle the ClickHouse query is tested against; nothing in production
calls it. Units, copies, the time range and the order are the funnels' (funnels.reference.people),
page paths cleaned as the paths reference cleans them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from headwater.analytics.funnels.reference import FunnelEvent, people, person_of
from headwater.analytics.paths.definition import CleaningRule
from headwater.analytics.paths.reference import clean


def journey_steps(events: Iterable[FunnelEvent], cleaning: tuple[CleaningRule, ...]) -> list[str]:
    """A unit's ordered events as `kind:value` steps (pages and track events), runs collapsed."""
    steps: list[str] = []
    for event in events:
        if event.type == "page":
            step = "page:" + clean(event.page_path, cleaning)
        elif event.type == "track":
            step = "event:" + event.event
        else:
            continue
        if not steps or steps[-1] != step:
            steps.append(step)
    return steps


def reference_journeys(
    events: Iterable[FunnelEvent],
    start: datetime,
    end: datetime,
    cleaning: tuple[CleaningRule, ...] = (),
    max_steps: int = 100,
    unit_of: Callable[[FunnelEvent], str] = person_of,
    include_bots: bool = False,
) -> list[tuple[str, ...]]:
    """Every unit's journey with a step in [start, end), cut to `max_steps`, as a multiset sorted
    by its steps (the order of journeys is the query's own choice)."""
    found = []
    for unit_events in people(events, start, end, unit_of, include_bots).values():
        steps = journey_steps(unit_events, cleaning)
        if steps:
            found.append(tuple(steps[:max_steps]))
    return sorted(found)
