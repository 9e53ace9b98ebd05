"""The envelope: one JetStream message per accepted request, carrying that request's valid events.

Versioned (`v`) so consumers can still read old messages during a replay:

- version 1: each event's `timestamp` already corrected for clock skew by the edge, the client's
  own value in `originalTimestamp`, a batch's `sentAt` copied onto its events;
- version 2: events as the client sent them (normalised by validation, nothing recomputed), the
  batch's `sentAt` in `sent_at`; consumers correct the clock skew (consumers/enrich/timestamps.py).
  Moving the correction off the edge made a batched event about three times cheaper to accept
  (docs/benchmarks.md), and a replay now re-derives event times with today's rule like every
  other enrichment; a batch's `context` and `integrations` copied into each event without its own;
- version 3 (written now): as 2, but a batch's `context` and `integrations` are kept once, in
  `context` and `integrations`, and consumers apply them to the events without their own. Copied,
  a 240 KB batch context made a 357 KB request of 2,500 events a 2.78 MB message (and ~580 MB of
  the edge's memory while it was encoded).

`received_at` is an ISO-8601 UTC string with milliseconds. The consumers' reader is
consumers/wire.py.

On the stream, an envelope longer than the edge's `--compress-above` (4 KB by default: batches,
not single events) is an LZ4 frame of that JSON (`pack`/`unpack`; any LZ4 tool reads it, e.g.
`lz4 -d`). A message body is told apart by its first bytes: JSON starts with `{`, an LZ4 frame
with its magic number. Batches compress 5-11x, which cuts what JetStream hashes, stores,
replicates and delivers per event (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import lz4.frame
import msgspec
import orjson

ENVELOPE_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
KeyKindName = Literal["public", "secret"]
# msgspec, not orjson: accepted events are msgspec Structs whose objects are raw JSON (edge/wire.py).
_encoder = msgspec.json.Encoder()


class EnvelopeError(ValueError):
    """A message that is not a readable envelope (poison for a consumer: dead-letter it)."""


LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
DEFAULT_COMPRESS_ABOVE = 4096
# An envelope holds one request's events (a 500 KB body by default, a few MB at most however the
# limits are set); a frame that would inflate past this is not one an edge wrote.
MAX_ENVELOPE_BYTES = 64 << 20
_UNPACK_STEP = 64 << 10  # the least unpack asks python-lz4 for at a time


def utf8_repaired(data: bytes) -> bytes:
    """`data` with every byte sequence that is not UTF-8 replaced by U+FFFD. JSON is UTF-8, but the
    readers that keep raw JSON (msgspec's `Raw`, skipped values) do not check the bytes inside a
    string, so an edge could accept what a consumer cannot decode; the edge repairs request bodies
    and consumers repair what older edges wrote (docs/ingest-api.md). A replacement never makes a
    quote or a backslash, so it changes no JSON structure. An ASCII body (most) costs one scan."""
    if data.isascii():
        return data
    try:
        data.decode()
    except UnicodeDecodeError:
        return data.decode(errors="replace").encode()
    return data


def pack(data: bytes, compress_above: int = DEFAULT_COMPRESS_ABOVE) -> bytes:
    """The message body for an encoded envelope: LZ4-framed when it is longer than
    `compress_above` bytes (0: never)."""
    if compress_above and len(data) > compress_above:
        return bytes(lz4.frame.compress(data))
    return data


def unpack(data: bytes) -> bytes:
    """The envelope JSON in a message body, decompressed when it is an LZ4 frame; EnvelopeError
    for a frame that is corrupt, truncated or inflates past MAX_ENVELOPE_BYTES."""
    if not data.startswith(LZ4_FRAME_MAGIC):
        return data
    decompressor = lz4.frame.LZ4FrameDecompressor()
    try:
        # Output in steps of the size the frame declares (the edge's frames do), at least 64 KB:
        # asking for MAX_ENVELOPE_BYTES at once allocates that much every time (~10 µs a message).
        declared = lz4.frame.get_frame_info(data)["content_size"]
        step = min(max(declared, _UNPACK_STEP), MAX_ENVELOPE_BYTES)
        parts, size, pending = [], 0, data
        while True:
            part = decompressor.decompress(pending, max_length=step)
            pending = b""
            parts.append(part)
            size += len(part)
            if size > MAX_ENVELOPE_BYTES:
                raise EnvelopeError(f"an LZ4 frame that inflates past {MAX_ENVELOPE_BYTES} bytes")
            if decompressor.eof:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            if decompressor.needs_input:
                raise EnvelopeError("an LZ4 frame that is truncated")
    except RuntimeError as exc:  # what python-lz4 raises for a corrupt frame
        raise EnvelopeError(f"not a readable LZ4 frame: {exc}") from None


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
    # A batch's context and integrations (raw JSON or dicts), for its events that have none.
    context: Any = None
    integrations: Any = None
    v: int = ENVELOPE_VERSION

    def encode(self) -> bytes:
        fields = {
            "v": self.v,
            "project": self.project,
            "request_id": self.request_id,
            "received_at": self.received_at,
            "sent_at": self.sent_at,
            "key_kind": self.key_kind,
            "ip": self.ip,
            "user_agent": self.user_agent,
            "origin": self.origin,
        }
        if self.context is not None:  # (a batch's only)
            fields["context"] = self.context
        if self.integrations is not None:
            fields["integrations"] = self.integrations
        fields["events"] = self.events
        return _encoder.encode(fields)

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """An envelope from a message body (JSON or LZ4-framed JSON) with its events as dicts (for
        tools and tests; consumers read envelopes with consumers/wire.py, which parses only what
        rows need)."""
        try:
            raw = orjson.loads(unpack(data))
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
                context=raw.get("context"),
                integrations=raw.get("integrations"),
                v=version,
            )
        except KeyError as exc:
            raise EnvelopeError(f"missing field {exc.args[0]!r}") from None
