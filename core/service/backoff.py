"""Exponential backoff with jitter from tenacity's wait strategies, for loops that are not
functions tenacity could wrap (a drainer, a consumer's insert retries)."""

from __future__ import annotations

from tenacity import wait_exponential, wait_random


class _Attempt:
    """The one attribute of tenacity's RetryCallState that its wait strategies read."""

    def __init__(self, number: int) -> None:
        self.attempt_number = number


class Backoff:
    def __init__(self, initial: float, maximum: float = 30.0, jitter: float = 1.0) -> None:
        self._wait = wait_exponential(multiplier=initial, max=maximum) + wait_random(0, jitter)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempts count from 1)."""
        return float(self._wait(_Attempt(attempt)))  # type: ignore[arg-type]
