"""The edge's error hierarchy; every rejection says its status, code and (where one is at fault) field."""

from __future__ import annotations

from headwater.control.errors import APIError


class IngestError(APIError):
    """A request the edge refuses. `headers` are added to the response (e.g. Retry-After)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, code, message, field)
        self.headers = headers or {}


class SinkUnavailable(Exception):
    """A retryable failure to make an envelope durable (JetStream unreachable, timed out)."""
