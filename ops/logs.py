"""Logging for every command: one format across roles, JSON lines for machines or text for people.

Every record carries the role and, inside a request, its request id (the `X-Request-Id` the edge
answers with, and the envelope's id in JetStream), so one request can be followed through the
logs. Keys and event payloads are never logged.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from headwater.core.service.logcontext import request_id

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(role)s %(name)s [%(request_id)s]: %(message)s"
LEVELS = ("debug", "info", "warning", "error")
# The loggers of each role, for `--log-level info,consumer=debug` and for naming the role of a
# record when one process runs several (`headwater up`).
ROLE_LOGGERS: dict[str, tuple[str, ...]] = {
    "edge": ("headwater.edge",),
    "spool": ("headwater.spool",),
    "control": ("headwater.control",),
    "consumer": ("headwater.consumers",),
    "sessionizer": ("headwater.sessionizer", "headwater.analytics"),
    # What every role shares (project registry, migrations, the HTTP app factory, auth failures).
    "core": ("headwater.core",),
    "nats": ("nats", "headwater.ops.natsconn", "headwater.ops.natsserver"),
    "http": ("uvicorn", "hypercorn", "quart"),
}


def parse_log_levels(value: str) -> tuple[str, dict[str, str]]:
    """`LEVEL[,ROLE=LEVEL...]` → (the default level, a level per role); ValueError when invalid."""
    default, per_role = "info", {}
    for part in (p.strip().lower() for p in value.split(",") if p.strip()):
        role, _, level = part.rpartition("=")
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r} (one of {', '.join(LEVELS)})")
        if not role:
            default = level
        elif role in ROLE_LOGGERS:
            per_role[role] = level
        else:
            raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLE_LOGGERS)})")
    return default, per_role


def _role_of(logger: str, fallback: str) -> str:
    for role, prefixes in ROLE_LOGGERS.items():
        if any(logger == p or logger.startswith(p + ".") for p in prefixes):
            return role
    return fallback


class _Context(logging.Filter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self._role = role

    def filter(self, record: logging.LogRecord) -> bool:
        # `up` runs every role in one process: name the role from the logger.
        record.role = _role_of(record.name, self._role) if self._role == "up" else self._role
        record.request_id = request_id.get() or "-"
        return True


def configure_logging(level: str, log_format: str = "text", role: str = "headwater") -> None:
    """`level` as `--log-level` takes it: `info`, or `info,consumer=debug,http=warning`."""
    level, per_role = parse_log_levels(level)
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
    for role_name, role_level in per_role.items():
        for logger in ROLE_LOGGERS[role_name]:
            logging.getLogger(logger).setLevel(role_level.upper())
