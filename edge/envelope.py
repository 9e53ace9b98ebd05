"""The envelope: one JetStream message per accepted request, carrying that request's valid events.

Versioned (`v`) so consumers can still read old messages during a replay:

- version 1: each event's `timestamp` already corrected for clock skew by the edge, the client's
  own value in `originalTimestamp`, a batch's `sentAt` copied onto its events;
- version 2 (written now): events as the client sent them (normalised by validation, nothing
  recomputed), the batch's `sentAt` in `sent_at`; consumers correct the clock skew
  (consumers/enrich/timestamps.py). Moving the correction off the edge made a batched event about
  three times cheaper to accept (docs/benchmarks.md), and a replay now re-derives event times
  with today's rule like every other enrichment.

`received_at` is an ISO-8601 UTC string with milliseconds. The consumers' reader is
consumers/wire.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import orjson

ENVELOPE_VERSION = 2
READABLE_VERSIONS = (1, 2)
KeyKindName = Literal["public", "secret"]
# msgspec, not orjson: accepted events are msgspec Structs whose objects are raw JSON (edge/wire.py).
_encoder = msgspec.json.Encoder()


class EnvelopeError(ValueError):
    """A message that is not a readable envelope (poison for a consumer: dead-letter it)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    project: str
    request_id: str
    received_at: str
    events: list[Any]  # SegmentEvent (edge/wire.py) or dicts
    key_kind: KeyKindName = "public"
    ip: str | None = None
    user_agent: str | None = None
    origin: str | None = None
    sent_at: str | None = None
    v: int = ENVELOPE_VERSION

    def encode(self) -> bytes:
        return _encoder.encode(
            {
                "v": self.v,
                "project": self.project,
                "request_id": self.request_id,
                "received_at": self.received_at,
                "sent_at": self.sent_at,
                "key_kind": self.key_kind,
                "ip": self.ip,
                "user_agent": self.user_agent,
                "origin": self.origin,
                "events": self.events,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """An envelope with its events as dicts (for tools and tests; consumers read envelopes
        with consumers/wire.py, which parses only what rows need)."""
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise EnvelopeError("not a JSON object")
        version = raw.get("v")
        if version not in READABLE_VERSIONS:
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
                sent_at=raw.get("sent_at"),
                v=version,
            )
        except KeyError as exc:
            raise EnvelopeError(f"missing field {exc.args[0]!r}") from None
