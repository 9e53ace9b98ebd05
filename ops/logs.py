"""Logging for every command: one format across roles, JSON lines for machines or text for people.

Every record carries the role and, inside a request, its request id (the `X-Request-Id` the edge
answers with, and the envelope's id in JetStream), so one request can be followed through the
logs. Keys and event payloads are never logged.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from headwater.control.logcontext import request_id

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(role)s %(name)s [%(request_id)s]: %(message)s"


class _Context(logging.Filter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self._role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self._role
        record.request_id = request_id.get() or "-"
        return True


def configure_logging(level: str, log_format: str = "text", role: str = "headwater") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context(role))
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(role)s %(name)s %(request_id)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Per-request access lines cost throughput and can carry PII; uvicorn's errors still show.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
