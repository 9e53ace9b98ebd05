"""The edge's error hierarchy; every rejection says its status, code and (where one is at fault) field."""

from __future__ import annotations

from headwater.core.service.errors import APIError


class IngestError(APIError):
    """A request the edge refuses. `headers` are added to the response (e.g. Retry-After);
    `project`: the project it was meant for, once the edge knows it (its refusal log, refusals.py)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, object]] | None = None,
    ) -> None:
        super().__init__(status, code, message, field)
        self.headers = headers or {}
        self.errors = errors
        self.project: str | None = None

    def to_dict(self) -> dict[str, object]:
        body = super().to_dict()
        if self.errors is not None:
            body["errors"] = self.errors
        return body

    def rejection(self, index: int) -> dict[str, object]:
        """How a batch answer lists this error for the event at `index`."""
        return {"index": index, "code": self.code, "field": self.field, "message": self.message}


class SinkUnavailable(Exception):
    """A retryable failure to make an envelope durable (JetStream unreachable, timed out)."""


class MessageTooLarge(Exception):
    """An envelope JetStream will never take: larger than the server's max payload or the events
    stream's max message size. Not retryable, so it never reaches the spool or the breaker."""
