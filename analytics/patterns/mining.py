"""Suggested funnels: closed (or maximal) frequent journeys, ranked by how much more often they
occur than their parts predict, each with the numbers behind its rank and a funnel definition.

Why not raw support: the most frequent patterns are pairs of the most popular steps, which occur
together because each is common. A pattern's *expected* share is what it would be if it were two
independent parts: the largest, over the places it can be cut in two, of the product of the two
parts' shares (the parts are frequent, so their shares are known). Its *leverage* is its share
minus that expectation (journeys the pattern has beyond chance, as a share), its *lift* the ratio,
its `z` the leverage in binomial standard errors. A pattern is suggested when it is closed (no
longer frequent pattern has the same support), has at least `min_lift` and `min_z`, and no longer
suggestion explains it: a suggested super-pattern holding at least `1 - redundancy` of its
journeys (a sub-journey of a suggestion is the same behaviour, not a second finding). Suggestions
are ranked by leverage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from headwater.analytics.patterns.journeys import Limits, encode
from headwater.analytics.patterns.prefixspan import (
    Counts,
    Encoded,
    closed,
    explained_by_longer,
    frequent_patterns,
    maximal,
)


@dataclass(frozen=True)
class MiningSettings:
    min_support: float = 0.03
    max_length: int = 8
    kind: str = "closed"  # or "maximal"
    min_lift: float = 2.0
    min_z: float = 10.0
    redundancy: float = 0.3
    top: int = 20
    limits: Limits = field(default_factory=Limits)
    deadline: float | None = None  # a time.monotonic() the mining stops at (MiningTimedOut)

    def __post_init__(self) -> None:
        if not 0 < self.min_support <= 1:
            raise ValueError("min_support is a share of journeys, within (0, 1]")
        if not 2 <= self.max_length <= 20:
            raise ValueError("max_length must be within 2..20 (a funnel has at most 20 steps)")
        if self.kind not in ("closed", "maximal"):
            raise ValueError("kind is closed or maximal")


@dataclass(frozen=True)
class Suggestion:
    """A suggested funnel and the reason for its rank."""

    steps: tuple[str, ...]
    support: int
    share: float
    expected_share: float
    leverage: float
    lift: float
    z: float
    step_counts: tuple[int, ...]  # journeys holding the first 1, 2, ... steps in order

    @property
    def reason(self) -> str:
        return (
            f"in {self.support} journeys ({self.share:.1%}), {self.lift:.1f}x the {self.expected_share:.1%} "
            f"its parts predict (leverage {self.leverage:.1%}, z {self.z:.0f}); "
            f"of those with the first step, {self.support / self.step_counts[0]:.0%} go on to the last"
        )

    def funnel(self, window: dict[str, Any] | None = None) -> dict[str, Any]:
        """A definition for the funnel API (`FunnelDefinitionSpec`): pages by path, else events."""
        return {
            "steps": [{"kind": "page" if s.startswith("/") else "event", "value": s} for s in self.steps],
            "window": window or {"value": 1, "unit": "day"},
            "order": "ordered",
            "unit": "sessions",
        }


def expected_share(pattern: Encoded, share: dict[Encoded, float]) -> float:
    """The share `pattern` would have if it were two independent parts, cut where that is largest."""
    return max(share[pattern[:i]] * share[pattern[i:]] for i in range(1, len(pattern)))


def suggest(journeys: Sequence[Sequence[str]], settings: MiningSettings | None = None) -> list[Suggestion]:
    """The ranked suggestions for `journeys` (each a list of steps, in order)."""
    settings = settings or MiningSettings()
    encoding = encode(journeys, settings.limits)
    n = len(encoding.journeys)
    if n == 0:
        return []
    found = frequent_patterns(
        encoding.journeys,
        max(1, math.ceil(settings.min_support * n)),
        settings.max_length,
        settings.limits.max_patterns,
        deadline=settings.deadline,
    )
    return rank(found, n, settings, encoding.decode)


def rank(
    found: dict[Encoded, Counts],
    n: int,
    settings: MiningSettings,
    decode: Any,
) -> list[Suggestion]:
    share = {p: c.support / n for p, c in found.items()}
    kept = closed(found) if settings.kind == "closed" else maximal(found)
    candidates: dict[Encoded, Suggestion] = {}
    for pattern in kept:
        if len(pattern) < 2:
            continue
        expected = expected_share(pattern, share)
        observed = share[pattern]
        lift = observed / expected
        z = (observed - expected) / math.sqrt(expected * (1 - expected) / n)
        if lift < settings.min_lift or z < settings.min_z:
            continue
        candidates[pattern] = Suggestion(
            steps=decode(pattern),
            support=found[pattern].support,
            share=observed,
            expected_share=expected,
            leverage=observed - expected,
            lift=lift,
            z=z,
            step_counts=tuple(found[pattern[:i]].support for i in range(1, len(pattern) + 1)),
        )
    explained = explained_by_longer(candidates, found, settings.redundancy)
    ranked = sorted(
        (s for p, s in candidates.items() if p not in explained), key=lambda s: (-s.leverage, s.steps)
    )
    return ranked[: settings.top]
