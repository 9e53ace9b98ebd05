"""Journeys as integers: steps are encoded once so the miners compare small ints, not strings."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Bounds on the input a mining run accepts: a run over more journeys is refused (ask for a
    shorter time range or a sample) and each journey keeps only its first `max_steps` steps. A run
    whose mining takes longer than `max_seconds` stops (None: no clock)."""

    max_journeys: int = 1_000_000
    max_steps: int = 100
    max_patterns: int = 200_000
    max_seconds: float | None = None

    def deadline(self) -> float | None:
        """The `time.monotonic()` by which a run starting now must be done."""
        return None if self.max_seconds is None else time.monotonic() + self.max_seconds


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
