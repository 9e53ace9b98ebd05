"""A seeded synthetic journey generator with a known answer, so the miners can be held to what is
planted in the data (recall, precision) and to inventing nothing on data where nothing is.

A journey is a list of steps: a page path (`/p/17`) or an event name (`event 17`). The background
is a first-order Markov chain over `distinct_steps` steps (a skewed start distribution, each step
followed by one of a few favoured successors or, with `teleport` chance, anything from the start
distribution), so single steps and adjacent pairs have real but diffuse structure. Planted
patterns of 3-6 steps are inserted into chosen journeys with up to `max_gap` background steps
between their steps (the pattern occurs in order, with gaps; the journey's own steps stay in their
order). A pattern is planted either only in converting journeys or in the same share of
converters and non-converters. Converting journeys end with the goal step, followed by a few
background steps that come after it; whether a journey converts is drawn independently of its
background, and the goal comes after the behaviour, so only planted patterns tell the groups apart
(a goal inside the journey would make converters' pre-goal parts shorter and every pattern rarer
among them: a confound the drivers would rightly report).

Pure Python (`random.Random(seed)`): the same seed gives the same data on every platform.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field

GOAL = "Purchased"


@dataclass(frozen=True)
class PlantedPattern:
    """One planted sequence and the share of all journeys it was planted in."""

    steps: tuple[str, ...]
    support: float
    converters_only: bool


@dataclass(frozen=True)
class GeneratorSettings:
    sessions: int = 50_000
    distinct_steps: int = 120
    converter_patterns: int = 8
    shared_patterns: int = 4
    min_pattern_length: int = 3
    max_pattern_length: int = 6
    min_support: float = 0.05
    max_support: float = 0.20
    max_gap: int = 2
    conversion_rate: float = 0.35
    mean_length: float = 10.0
    max_length: int = 40
    successors: int = 12
    teleport: float = 0.3
    goal: str = GOAL
    seed: int = 0

    def __post_init__(self) -> None:
        if not 50 <= self.distinct_steps <= 200:
            raise ValueError("distinct_steps must be within 50..200")
        if not 3 <= self.min_pattern_length <= self.max_pattern_length <= 6:
            raise ValueError("pattern lengths must be within 3..6")
        if self.converter_patterns and self.max_support > self.conversion_rate:
            raise ValueError("a converter-only pattern cannot be planted in more journeys than convert")


@dataclass(frozen=True)
class Dataset:
    """The journeys (each converter's ends with the goal and what followed it) and the truth."""

    journeys: tuple[tuple[str, ...], ...]
    converted: tuple[bool, ...]
    goal: str
    planted: tuple[PlantedPattern, ...] = field(default=())

    @property
    def converter_only(self) -> tuple[PlantedPattern, ...]:
        return tuple(p for p in self.planted if p.converters_only)

    @property
    def shared(self) -> tuple[PlantedPattern, ...]:
        return tuple(p for p in self.planted if not p.converters_only)


def vocabulary(distinct_steps: int) -> list[str]:
    """Half page paths, half event names."""
    return [f"/p/{i}" if i % 2 == 0 else f"event {i}" for i in range(distinct_steps)]


class _Background:
    """The Markov chain: cumulative weights for the start and for each step's next step."""

    def __init__(self, rng: random.Random, settings: GeneratorSettings) -> None:
        n = settings.distinct_steps
        start = [1.0 / (rank + 1) ** 0.8 for rank in range(n)]
        rng.shuffle(start)
        self.start = list(itertools.accumulate(start))
        self.next: list[list[float]] = []
        total_start = self.start[-1]
        for _ in range(n):
            weights = [settings.teleport * w / total_start for w in start]
            favoured = rng.sample(range(n), settings.successors)
            raw = [rng.expovariate(1.0) for _ in favoured]
            for step, w in zip(favoured, raw, strict=True):
                weights[step] += (1 - settings.teleport) * w / sum(raw)
            self.next.append(list(itertools.accumulate(weights)))

    def walk(self, rng: random.Random, length: int) -> list[int]:
        state = _draw(rng, self.start)
        steps = [state]
        for _ in range(length - 1):
            state = _draw(rng, self.next[state])
            steps.append(state)
        return steps


def _draw(rng: random.Random, cumulative: list[float]) -> int:
    return min(bisect.bisect_right(cumulative, rng.random() * cumulative[-1]), len(cumulative) - 1)


def _length(rng: random.Random, settings: GeneratorSettings) -> int:
    """1 + geometric, capped: most journeys short, a long tail."""
    p = 1.0 / settings.mean_length
    length = 1
    while length < settings.max_length and rng.random() > p:
        length += 1
    return length


def _plant(rng: random.Random, journey: list[str], pattern: tuple[str, ...], max_gap: int) -> list[str]:
    """`journey` with `pattern`'s steps inserted in order, up to `max_gap` journey steps between."""
    gaps = [rng.randint(0, max_gap) for _ in pattern[1:]]
    start = rng.randint(0, max(0, len(journey) - sum(gaps)))
    out = journey[:start]
    rest = journey[start:]
    for step, gap in zip(pattern, [*gaps, len(rest)], strict=True):
        out.append(step)
        out.extend(rest[:gap])
        rest = rest[gap:]
    out.extend(rest)
    return out


def generate(settings: GeneratorSettings | None = None) -> Dataset:
    """The journeys and the planted truth for `settings` (the defaults: 50,000 journeys)."""
    settings = settings or GeneratorSettings()
    rng = random.Random(settings.seed)  # noqa: S311 -- synthetic data, seeded for repeatability
    names = vocabulary(settings.distinct_steps)
    background = _Background(rng, settings)
    n = settings.sessions
    converted = [rng.random() < settings.conversion_rate for _ in range(n)]
    converters = [i for i, c in enumerate(converted) if c]
    journeys = [[names[s] for s in background.walk(rng, _length(rng, settings))] for _ in range(n)]

    planted: list[PlantedPattern] = []
    kinds = [True] * settings.converter_patterns + [False] * settings.shared_patterns
    for converters_only in kinds:
        length = rng.randint(settings.min_pattern_length, settings.max_pattern_length)
        steps = tuple(rng.sample(names, length))
        pool = converters if converters_only else range(n)
        count = min(len(pool), round(rng.uniform(settings.min_support, settings.max_support) * n))
        for i in rng.sample(pool, count):
            journeys[i] = _plant(rng, journeys[i], steps, settings.max_gap)
        planted.append(PlantedPattern(steps, count / n, converters_only))

    for i in converters:
        after = background.walk(rng, rng.randint(1, 3))
        journeys[i] = [*journeys[i], settings.goal, *(names[s] for s in after)]
    return Dataset(
        journeys=tuple(tuple(j) for j in journeys),
        converted=tuple(converted),
        goal=settings.goal,
        planted=tuple(planted),
    )


def null_dataset(sessions: int = 50_000, seed: int = 0) -> Dataset:
    """Nothing planted; whether a journey converts is independent of everything in it."""
    return generate(GeneratorSettings(sessions=sessions, converter_patterns=0, shared_patterns=0, seed=seed))
