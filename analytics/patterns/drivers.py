"""What converters do differently: the patterns whose presence raises or lowers the chance of
reaching a goal, tested so that where nothing differs nothing is reported.

A journey converts when it holds the goal step; patterns are mined on the part before the goal
(what came after cannot have caused it), a non-converter's whole journey otherwise. Every closed
frequent pattern of two or more steps is a hypothesis: its 2x2 table (holds it or not, converted
or not) gets Fisher's exact test, and the p-values of all tested patterns get the
Benjamini-Hochberg correction; a driver is a pattern with q <= `alpha` that also moves the
conversion rate by at least `min_effect` times, up or down. The effect floor is there because
where nothing differs every report is false, and BH then bounds only the chance of reporting
anything, by about `alpha`; with tens of thousands of journeys a chance difference of a fifth is
already significant (null data sets of 20,000 journeys showed q = 0.0035 at a lift of 1.26) yet
no reason to act. Of drivers where a longer
one holds at least `1 - redundancy` of a shorter one's journeys, the longer is kept (the same
behaviour). Drivers are ranked by p-value, then by how far the conversion rate moves, and each is
kept only if it still moves conversion among the journeys none of the drivers above it holds
(_beyond_those_above).

Caveat, documented in docs/patterns.md: this is association, not cause; and a goal reached
early leaves converters a shorter pre-goal journey, which by itself makes every pattern rarer among
them (reported as lowering conversion).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from headwater.analytics.patterns.journeys import Limits, encode
from headwater.analytics.patterns.prefixspan import (
    Encoded,
    OccurrenceIndex,
    check_deadline,
    closed,
    explained_by_longer,
    frequent_patterns,
    holders_of,
    occurrence_index,
)
from headwater.analytics.patterns.significance import benjamini_hochberg, fisher_exact


@dataclass(frozen=True)
class DriverSettings:
    min_support: float = 0.02
    max_length: int = 6
    alpha: float = 0.05
    min_effect: float = 1.5
    redundancy: float = 0.3
    top: int = 20
    limits: Limits = field(default_factory=Limits)
    deadline: float | None = None  # a time.monotonic() the mining stops at (MiningTimedOut)


@dataclass(frozen=True)
class Driver:
    """A pattern and how conversion differs with and without it."""

    steps: tuple[str, ...]
    converters_with: int
    converters: int
    others_with: int
    others: int
    lift: float  # conversion rate with the pattern / conversion rate without it
    p_value: float
    q_value: float

    @property
    def raises(self) -> bool:
        return self.lift > 1

    @property
    def reason(self) -> str:
        with_ = self.converters_with / max(1, self.converters_with + self.others_with)
        return (
            f"in {self.converters_with / self.converters:.1%} of converters and "
            f"{self.others_with / max(1, self.others):.1%} of the others; {with_:.1%} of journeys with it "
            f"convert, {self.lift:.2f}x those without (Fisher p={self.p_value:.2g}, BH q={self.q_value:.2g})"
        )


def split(journeys: Sequence[Sequence[str]], goal: str) -> tuple[list[Sequence[str]], list[bool]]:
    """Each journey's part before its first goal step, and whether it reached the goal."""
    before: list[Sequence[str]] = []
    converted: list[bool] = []
    for journey in journeys:
        try:
            at = list(journey).index(goal)
        except ValueError:
            before.append(journey)
            converted.append(False)
        else:
            before.append(journey[:at])
            converted.append(True)
    return before, converted


def drivers(
    journeys: Sequence[Sequence[str]], goal: str, settings: DriverSettings | None = None
) -> list[Driver]:
    """The significant drivers of reaching `goal`, strongest evidence first."""
    settings = settings or DriverSettings()
    before, converted = split(journeys, goal)
    encoding = encode(before, settings.limits)
    n, total = len(before), sum(converted)
    if n == 0 or total in (0, n):
        return []
    index = occurrence_index(encoding.journeys)  # the mining's, and each driver's holders after it
    if index is None:
        return []
    found = frequent_patterns(
        encoding.journeys,
        max(1, math.ceil(settings.min_support * n)),
        settings.max_length,
        settings.limits.max_patterns,
        labels=converted,
        deadline=settings.deadline,
        index=index,
    )
    tested = [p for p in closed(found) if len(p) >= 2]
    tables = []
    for pattern in tested:
        a = found[pattern].positive
        b = found[pattern].support - a
        tables.append((a, b, total - a, n - total - b))
    q_values = benjamini_hochberg([fisher_exact(*t) for t in tables])
    significant: dict[Encoded, Driver] = {}
    for pattern, (a, b, c, d), q in zip(tested, tables, q_values, strict=True):
        if q > settings.alpha:
            continue
        rate_with, rate_without = a / (a + b), c / max(1, c + d)
        if rate_without and 1 / settings.min_effect < rate_with / rate_without < settings.min_effect:
            continue
        significant[pattern] = Driver(
            steps=encoding.decode(pattern),
            converters_with=a,
            converters=total,
            others_with=b,
            others=n - total,
            lift=rate_with / rate_without if rate_without else math.inf,
            p_value=fisher_exact(a, b, c, d),
            q_value=q,
        )
    explained = explained_by_longer(significant, found, settings.redundancy)
    ranked = sorted(
        ((p, d) for p, d in significant.items() if p not in explained),
        key=lambda item: (
            item[1].p_value,
            -abs(math.log(item[1].lift)) if item[1].lift > 0 else 0.0,
            item[1].steps,
        ),
    )
    return _beyond_those_above(ranked, index, converted, settings)


def _beyond_those_above(
    ranked: list[tuple[Encoded, Driver]],
    index: OccurrenceIndex,
    converted: Sequence[bool],
    settings: DriverSettings,
) -> list[Driver]:
    """The drivers of `ranked`, in order, that still move conversion among the journeys none of
    the drivers kept before them holds. A pattern that mixes the steps of two drivers (a step of
    one, then a step of another) is found in the journeys holding both, so it tests as strongly
    as they do; without them it is the background's, and is left out. The test is Fisher's on
    that remainder at `alpha` divided by the candidates (it can only remove drivers that the
    correction already let through), with the same effect floor and direction."""
    if not ranked:
        return []
    outcome = np.asarray(converted, dtype=bool)
    covered = np.zeros(len(outcome), dtype=bool)
    # The journeys no kept driver holds, and the converters among them.
    remaining, remaining_converters = len(outcome), int(np.count_nonzero(outcome))
    threshold = settings.alpha / len(ranked)
    kept: list[Driver] = []
    for pattern, driver in ranked:
        if len(kept) == settings.top:
            break
        check_deadline(settings.deadline)
        held = holders_of(index, pattern)
        fresh = held[~covered[held]]
        a = int(np.count_nonzero(outcome[fresh]))
        b = len(fresh) - a
        c, d = remaining_converters - a, remaining - remaining_converters - b
        if a + b == 0 or fisher_exact(a, b, c, d) > threshold:
            continue
        rate_with, rate_without = a / (a + b), c / max(1, c + d)
        moved = rate_with / rate_without if rate_without else math.inf
        if (moved >= settings.min_effect) if driver.raises else (moved <= 1 / settings.min_effect):
            kept.append(driver)
            covered[fresh] = True
            remaining, remaining_converters = remaining - len(fresh), remaining_converters - a
    return kept
