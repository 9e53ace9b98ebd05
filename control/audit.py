"""The audit trail: every change through the control API, logged and published to `hw.audit`.

Records name the admin token by its name (never the token), the action, the project, the fields
that changed (never a key or a digest) and when. Each is written to the log (logger
`headwater.audit`) and published to JetStream (stream HW_AUDIT, awaited). The change itself is
already stored when the record is written, so a failed publish does not fail the request: it is
logged at error level beside the audit line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from headwater.core.projects.project import utc_now_iso

AUDIT_SUBJECT = "hw.audit"
AUDIT_STREAM = "HW_AUDIT"
log = logging.getLogger("headwater.audit")


async def ensure_audit_stream(
    js: JetStreamContext, replicas: int, max_age_seconds: float = 400 * 24 * 3600
) -> None:
    try:
        await js.stream_info(AUDIT_STREAM)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=AUDIT_STREAM,
                description="headwater control-plane audit trail",
                subjects=[AUDIT_SUBJECT],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=replicas,
                max_age=max_age_seconds,
                discard=DiscardPolicy.OLD,
            )
        )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    actor: str
    action: str
    project: str
    details: dict[str, Any]
    at: str

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "at": self.at,
                "actor": self.actor,
                "action": self.action,
                "project": self.project,
                "details": self.details,
            }
        )


class AuditLog:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def record(self, actor: str, action: str, project: str, **details: Any) -> AuditRecord:
        entry = AuditRecord(actor, action, project, details, utc_now_iso())
        log.info(
            "audit: %s %s %s %s", entry.actor, entry.action, entry.project, orjson.dumps(details).decode()
        )
        try:
            await self._js.publish(AUDIT_SUBJECT, entry.to_json(), stream=AUDIT_STREAM)
        except Exception:
            log.exception("audit record of %s %s not published to %s", action, project, AUDIT_SUBJECT)
        return entry
