"""Journeys as integers: steps are encoded once so the miners compare small ints, not strings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Bounds on the input a mining run accepts: a run over more journeys is refused (ask for a
    shorter time range or a sample) and each journey keeps only its first `max_steps` steps."""

    max_journeys: int = 1_000_000
    max_steps: int = 100
    max_patterns: int = 200_000


class TooManyJourneys(ValueError):
    """More journeys than `Limits.max_journeys`."""


@dataclass(frozen=True)
class Encoding:
    names: tuple[str, ...]
    journeys: tuple[tuple[int, ...], ...]

    def decode(self, pattern: Sequence[int]) -> tuple[str, ...]:
        return tuple(self.names[s] for s in pattern)


def encode(journeys: Sequence[Sequence[str]], limits: Limits) -> Encoding:
    if len(journeys) > limits.max_journeys:
        raise TooManyJourneys(f"{len(journeys)} journeys, more than the limit of {limits.max_journeys}")
    index: dict[str, int] = {}
    encoded = tuple(tuple(index.setdefault(s, len(index)) for s in j[: limits.max_steps]) for j in journeys)
    return Encoding(tuple(index), encoded)
