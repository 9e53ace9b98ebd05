"""The envelope: one JetStream message per accepted request, carrying that request's valid events.

Versioned (`v`) so consumers can still read old messages during a replay. Timestamps are ISO-8601
UTC strings with milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

ENVELOPE_VERSION = 1
KeyKindName = Literal["public", "secret"]


class EnvelopeError(ValueError):
    """A message that is not a readable envelope (poison for a consumer: dead-letter it)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    project: str
    request_id: str
    received_at: str
    events: list[dict[str, Any]]
    key_kind: KeyKindName = "public"
    ip: str | None = None
    user_agent: str | None = None
    origin: str | None = None
    v: int = ENVELOPE_VERSION

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": self.v,
                "project": self.project,
                "request_id": self.request_id,
                "received_at": self.received_at,
                "key_kind": self.key_kind,
                "ip": self.ip,
                "user_agent": self.user_agent,
                "origin": self.origin,
                "events": self.events,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise EnvelopeError("not a JSON object")
        version = raw.get("v")
        if version != ENVELOPE_VERSION:
            raise EnvelopeError(f"unsupported envelope version {version!r}")
        try:
            events = raw["events"]
            if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
                raise EnvelopeError("events must be a list of objects")
            key_kind = raw.get("key_kind", "public")
            if key_kind not in ("public", "secret"):
                raise EnvelopeError(f"unknown key kind {key_kind!r}")
            return cls(
                project=str(raw["project"]),
                request_id=str(raw["request_id"]),
                received_at=str(raw["received_at"]),
                events=events,
                key_kind=key_kind,
                ip=raw.get("ip"),
                user_agent=raw.get("user_agent"),
                origin=raw.get("origin"),
                v=version,
            )
        except KeyError as exc:
            raise EnvelopeError(f"missing field {exc.args[0]!r}") from None
