"""Context that log records carry without being passed around: the current request's id."""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("headwater_request_id", default=None)
