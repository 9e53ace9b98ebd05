"""The reference paths: the definitions of docs/paths.md in plain Python, written to be obviously
correct rather than fast. It is the oracle the ClickHouse query (query.py) is tested against;
nothing in production calls it. Persons, copies and the time range are the funnels'
(headwater.analytics.funnels.reference.people); events of one millisecond are ordered by their
steps, not by message id."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from headwater.analytics.funnels.reference import FunnelEvent, people

from .definition import INCLUDED_TYPES, KIND_OF_TYPE, CleaningRule, Paths, check_rule

StepKey = tuple[str, str]  # (kind, value): ("page", "/pricing"), ("event", "Signed Up")


@dataclass(frozen=True, slots=True)
class PersonPath:
    """One person's path: its steps, the first at `first_depth` (1, or later with an end point
    when fewer steps came before it)."""

    person: str
    first_depth: int
    steps: tuple[StepKey, ...]


def _substitute(replacement: str, match: re.Match[str]) -> str:
    """ClickHouse's replacement: `\\0`..`\\9` the match and its groups (an unmatched group empty),
    `\\x` any other x itself, a lone trailing backslash itself."""
    out, index = [], 0
    while index < len(replacement):
        character = replacement[index]
        if character == "\\" and index + 1 < len(replacement):
            following = replacement[index + 1]
            if following.isascii() and following.isdigit():
                out.append(match.group(int(following)) or "")
            else:
                out.append(following)
            index += 2
        else:
            out.append(character)
            index += 1
    return "".join(out)


def clean(path: str, rules: Sequence[CleaningRule]) -> str:
    """`path` after each rule in turn: every non-overlapping match replaced, left to right."""
    for index, rule in enumerate(rules):
        compiled = check_rule(rule, index)
        path = compiled.sub(lambda match, rule=rule: _substitute(rule.replacement, match), path)  # type: ignore[misc]
    return path


def journey(paths: Paths, events: Sequence[FunnelEvent]) -> list[StepKey]:
    """A person's events as steps (`include`'s types; page paths cleaned) in order of time, then of
    the step's `kind:value` (code-point order, which is UTF-8's byte order), a run of equal steps
    collapsed into one."""
    types = INCLUDED_TYPES[paths.include]
    timed: list[tuple[datetime, str, StepKey]] = []
    for event in events:
        if event.type not in types:
            continue
        kind = KIND_OF_TYPE[event.type]
        value = clean(event.page_path, paths.cleaning) if kind == "page" else event.event
        timed.append((event.timestamp, f"{kind}:{value}", (kind, value)))
    steps: list[StepKey] = []
    for _, _, step in sorted(timed, key=lambda entry: entry[:2]):
        if not steps or steps[-1] != step:
            steps.append(step)
    return steps


def matches(paths: Paths, step: StepKey) -> bool:
    anchor = paths.anchor
    assert anchor is not None
    kind, value = step
    if kind != anchor.kind:
        return False
    if kind == "event":
        return value == anchor.value
    return anchor.matches("", "page", value)


def person_path(paths: Paths, person: str, steps: Sequence[StepKey]) -> PersonPath | None:
    """The person's one path, or None when no step of theirs is the start (end) point."""
    if paths.start is not None:
        found = [index for index, step in enumerate(steps) if matches(paths, step)]
        if not found:
            return None
        return PersonPath(person, 1, tuple(steps[found[0] : found[0] + paths.steps]))
    if paths.end is not None:
        found = [index for index, step in enumerate(steps) if matches(paths, step)]
        if not found:
            return None
        last = found[-1]
        path = tuple(steps[max(0, last - paths.steps + 1) : last + 1])
        return PersonPath(person, paths.steps - len(path) + 1, path)
    if not steps:
        return None
    return PersonPath(person, 1, tuple(steps[: paths.steps]))


def person_paths(
    paths: Paths, events: Iterable[FunnelEvent], start: datetime, end: datetime
) -> list[PersonPath]:
    """Every person's path over their events in [start, end), sorted by person."""
    result = []
    for person, person_events in sorted(people(events, start, end, include_bots=paths.include_bots).items()):
        found = person_path(paths, person, journey(paths, person_events))
        if found is not None:
            result.append(found)
    return result
