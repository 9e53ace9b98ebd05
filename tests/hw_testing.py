"""Helpers shared by the tests (`tests/` is on the pytest pythonpath)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

ADMIN_TOKEN = "test-admin-token-" + "x" * 16


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic_auth(key: str) -> dict[str, str]:
    """Segment style: the write key is the HTTP Basic username, the password is empty."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 10.0, interval: float = 0.1
) -> T:
    """Poll `probe` until `done(result)`; fail with the last result after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            shown = getattr(result, "text", None) or result  # an HTTP response: show its body
            raise AssertionError(f"condition not met within {timeout}s; last result: {shown!r}")
        await asyncio.sleep(interval)


def track_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "Signed Up", "userId": "user-1", "properties": {"plan": "free"}}
    event.update(overrides)
    return event
