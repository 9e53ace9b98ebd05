"""Frequent sequential patterns with gaps, on integer steps (PrefixSpan's growth, vertical counting).

A pattern occurs in a journey when its steps occur in it in order, any steps between them; its
support is the number of journeys it occurs in (once per journey, however often it repeats).
Patterns grow one step at a time, as in PrefixSpan; each pattern keeps, for every journey holding
it, the position where its leftmost occurrence ends. Leftmost matching makes the support exact: if
any occurrence leaves room for the next step, the leftmost does. Growing by step `x` is then one
vectorised search per (pattern, x): the first occurrence of `x` after each end, found with
`numpy.searchsorted` in `x`'s sorted occurrence keys (journey * width + position). Only steps that
extended the pattern's parent are tried (a pattern's extension by `x` is frequent only if its
parent's is), which keeps the candidates few below the first level.

Own code rather than the `prefixspan` package: on the generator's 50,000 journeys the package and
a pure-Python PrefixSpan with pseudo-projection both took minutes; this took seconds
(docs/patterns.md, "Library"). It also counts a labelled group's support in the same pass, which
the drivers need.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from itertools import chain, combinations

import numpy as np
import numpy.typing as npt

Encoded = tuple[int, ...]
Ints = npt.NDArray[np.int64]


class TooManyPatterns(ValueError):
    """More frequent patterns than the limit: ask for a higher minimum support or shorter ones."""


class MiningTimedOut(TimeoutError):
    """The mining ran past its deadline: ask for a higher minimum support, shorter patterns or a
    shorter range."""


def check_deadline(deadline: float | None) -> None:
    """MiningTimedOut once `time.monotonic()` is past `deadline` (None: no clock)."""
    if deadline is not None and time.monotonic() > deadline:
        raise MiningTimedOut(
            "the mining ran out of time: raise the minimum support, lower the maximum length "
            "or ask for a shorter range"
        )


@dataclass(frozen=True)
class Counts:
    """A pattern's support, and its support among the journeys labelled positive."""

    support: int
    positive: int


@dataclass(frozen=True)
class OccurrenceIndex:
    """Each step's occurrences as sorted keys journey * width + position, each array ending with a
    sentinel past every journey: a search for the next occurrence never falls off the end, and
    "in the same journey" is one comparison."""

    width: int
    occurrences: dict[int, Ints]


def occurrence_index(journeys: Sequence[Sequence[int]]) -> OccurrenceIndex | None:
    """The index of `journeys`; None when they hold no step."""
    n = len(journeys)
    lengths = np.fromiter((len(j) for j in journeys), dtype=np.int64, count=n)
    if not lengths.any():
        return None
    steps = np.fromiter(chain.from_iterable(journeys), dtype=np.int64, count=int(lengths.sum()))
    width = int(lengths.max()) + 1
    journey_of = np.repeat(np.arange(n, dtype=np.int64), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    keys = journey_of * width + (np.arange(len(steps), dtype=np.int64) - starts)
    order = np.lexsort((keys, steps))
    steps, keys = steps[order], keys[order]
    bounds = np.flatnonzero(np.diff(steps)) + 1
    sentinel = np.array([n * width], dtype=np.int64)
    occurrences: dict[int, Ints] = {
        int(steps[b]): np.concatenate((k, sentinel))
        for b, k in zip(np.r_[0, bounds], np.split(keys, bounds), strict=True)
    }
    return OccurrenceIndex(width, occurrences)


def holders_of(index: OccurrenceIndex, pattern: Encoded) -> Ints:
    """The journeys (sorted indexes) holding `pattern`, by leftmost matching as the miner grows it."""
    width, none = index.width, np.zeros(0, dtype=np.int64)
    if not pattern or pattern[0] not in index.occurrences:
        return none
    keys = index.occurrences[pattern[0]][:-1]
    of = keys // width  # sorted: each journey's first key is its leftmost occurrence
    first = np.flatnonzero(np.r_[True, of[1:] != of[:-1]])
    journeys, ends = of[first], keys[first] % width
    for step in pattern[1:]:
        k = index.occurrences.get(step)
        if k is None:
            return none
        base = journeys * width
        after = k[np.searchsorted(k, base + ends + 1)]
        hit = after < base + width
        journeys, ends = journeys[hit], (after - base)[hit]
    return journeys


def frequent_patterns(
    journeys: Sequence[Sequence[int]],
    min_count: int,
    max_length: int,
    max_patterns: int,
    labels: Sequence[bool] | None = None,
    deadline: float | None = None,
    index: OccurrenceIndex | None = None,
) -> dict[Encoded, Counts]:
    """Every pattern of 1..`max_length` steps occurring in at least `min_count` journeys; past
    `deadline` (a `time.monotonic()`), MiningTimedOut. `index`: the journeys' occurrence index,
    when the caller has built it already."""
    if min_count < 1:
        raise ValueError("min_count must be at least 1")
    found: dict[Encoded, Counts] = {}
    n = len(journeys)
    if n == 0 or max_length < 1:
        return found
    index = index or occurrence_index(journeys)
    if index is None:
        return found
    width, occurrences = index.width, index.occurrences
    positive = np.asarray(labels, dtype=bool) if labels is not None else np.zeros(n, dtype=bool)

    def add(pattern: Encoded, holders: Ints) -> None:
        found[pattern] = Counts(len(holders), int(positive[holders].sum()))
        if len(found) > max_patterns:
            raise TooManyPatterns(
                f"more than {max_patterns} frequent patterns: "
                "raise the minimum support or lower the maximum length"
            )

    stack: list[tuple[Encoded, Ints, Ints, list[int]]] = []
    firsts: list[int] = []
    for step, k in occurrences.items():
        holders, first = np.unique(k[:-1] // width, return_index=True)
        if len(holders) >= min_count:
            firsts.append(step)
            add((step,), holders)
            stack.append(((step,), holders, k[first] % width, []))
    for entry in stack:
        entry[3].extend(firsts)
    while stack:
        check_deadline(deadline)
        pattern, holders, ends, candidates = stack.pop()
        if len(pattern) >= max_length:
            continue
        base = holders * width
        query, limit = base + ends + 1, base + width
        grown: list[tuple[Encoded, Ints, Ints]] = []
        for step in candidates:
            k = occurrences[step]
            after = k[np.searchsorted(k, query)]
            hit = after < limit
            if np.count_nonzero(hit) >= min_count:
                grown.append(((*pattern, step), holders[hit], after[hit] - base[hit]))
        extended = [g[0][-1] for g in grown]
        for child, child_holders, child_ends in grown:
            add(child, child_holders)
            stack.append((child, child_holders, child_ends, extended))
    return found


def closed(found: dict[Encoded, Counts]) -> set[Encoded]:
    """The patterns no one-step-longer frequent pattern has the same support as.

    Enough to check one step longer: support only falls as a pattern grows, so a longer
    super-pattern with equal support has one-step-longer ones in between with equal support
    (within the maximum length the patterns were mined to)."""
    covered: set[Encoded] = set()
    for pattern, counts in found.items():
        if len(pattern) < 2:
            continue
        for i in range(len(pattern)):
            shorter = pattern[:i] + pattern[i + 1 :]
            if found[shorter].support == counts.support:
                covered.add(shorter)
    return set(found) - covered


def maximal(found: dict[Encoded, Counts]) -> set[Encoded]:
    """The patterns no frequent pattern contains (within the maximum length)."""
    covered = {
        pattern[:i] + pattern[i + 1 :] for pattern in found if len(pattern) > 1 for i in range(len(pattern))
    }
    return set(found) - covered


def explained_by_longer(
    chosen: Collection[Encoded], found: dict[Encoded, Counts], redundancy: float
) -> set[Encoded]:
    """The patterns of `chosen` that a longer one of `chosen` explains: it holds them as a
    sub-pattern and at least `1 - redundancy` of their journeys (the same behaviour, not a second
    finding). Suggestions and drivers both leave these out."""
    explained: set[Encoded] = set()
    for pattern in sorted(chosen, key=len, reverse=True):
        if pattern in explained:
            continue
        for size in range(2, len(pattern)):
            for sub in combinations(pattern, size):
                if sub in chosen and found[pattern].support >= (1 - redundancy) * found[sub].support:
                    explained.add(sub)
    return explained


def contains(journey: Sequence[int], pattern: Sequence[int]) -> bool:
    """Whether `pattern`'s steps occur in `journey` in order (gaps allowed)."""
    it = iter(journey)
    return all(step in it for step in pattern)
