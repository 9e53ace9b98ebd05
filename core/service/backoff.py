"""Exponential backoff with jitter from tenacity's wait strategies, for loops that are not
functions tenacity could wrap (a drainer, a consumer's insert retries)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, before_sleep_log, wait_exponential, wait_random


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


async def retry_until_done(work: Callable[[], Awaitable[None]], log: logging.Logger) -> None:
    """Run `work` until it succeeds, 0.2 s to 5 s apart with jitter, each failure logged as a
    warning (a KV follower's resync after a reconnect)."""
    async for attempt in AsyncRetrying(
        wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.5),
        before_sleep=before_sleep_log(log, logging.WARNING),
    ):
        with attempt:
            await work()
