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

`received_at` is an ISO-8601 UTC string with milliseconds. Every reader decodes an envelope's
fields with one definition, `WireEnvelope[E]` and `decode_wire_envelope` (versions, required
fields, key kinds and the EnvelopeError that names what is wrong); readers differ only in what
they make of the events: the consumers a struct of the fields rows need (consumers/wire.py),
tools and tests dicts (`Envelope.decode`).

On the stream, an envelope longer than the edge's `--compress-above` (4 KB by default: batches,
not single events) is an LZ4 frame of that JSON (`pack`/`unpack`; any LZ4 tool reads it, e.g.
`lz4 -d`). A message body is told apart by its first bytes: JSON starts with `{`, an LZ4 frame
with its magic number. Batches compress 5-11x, which cuts what JetStream hashes, stores,
replicates and delivers per event (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast, get_args

import lz4.frame
import msgspec

ENVELOPE_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
KeyKind = Literal["public", "secret"]
KEY_KINDS: tuple[str, ...] = get_args(KeyKind)
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
    key_kind: KeyKind = "public"
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
        """An envelope from a message body (JSON or LZ4-framed JSON) with its events, context and
        integrations as dicts (for tools and tests; consumers read envelopes with
        consumers/wire.py, which parses only what rows need); EnvelopeError as for any reader."""
        wire = decode_wire_envelope(unpack(data), _dict_envelope_decoder)
        return cls(
            project=wire.project,
            request_id=wire.request_id,
            received_at=wire.received_at,
            events=wire.events,
            key_kind=cast(KeyKind, wire.key_kind),
            ip=wire.ip,
            user_agent=wire.user_agent,
            origin=wire.origin,
            sent_at=wire.sent_at,
            context=_any_decoder.decode(wire.context),
            integrations=_any_decoder.decode(wire.integrations),
            v=wire.v,
        )


E = TypeVar("E")
NULL = msgspec.Raw(b"null")


class WireEnvelope(msgspec.Struct, Generic[E]):
    """An envelope as read from a message body, whatever the version: one definition of its
    fields for every reader, which chooses how its events are read (`E`). A batch's context and
    integrations (version 3) stay raw JSON; absent, they are NULL itself."""

    v: Any  # checked against READABLE_VERSIONS by decode_wire_envelope, with a message that says so
    project: str
    request_id: str
    received_at: str
    events: list[E]
    key_kind: str = "public"
    ip: str | None = None
    user_agent: str | None = None
    origin: str | None = None
    sent_at: str | None = None  # version 2 on: the batch's sentAt (an event's own comes first)
    context: msgspec.Raw = NULL
    integrations: msgspec.Raw = NULL


_any_decoder = msgspec.json.Decoder()
_dict_envelope_decoder = msgspec.json.Decoder(WireEnvelope[dict[str, Any]])


def decode_wire_envelope(data: bytes, decoder: msgspec.json.Decoder[WireEnvelope[E]]) -> WireEnvelope[E]:
    """The envelope in `data` (JSON, already unpacked) read with `decoder`; EnvelopeError saying
    why when it is not JSON, not an envelope, of a version no reader knows, or of an unknown key
    kind."""
    try:
        return checked_envelope(decoder.decode(data))
    except msgspec.DecodeError as exc:
        raise _unreadable(data, exc) from None


def checked_envelope(envelope: WireEnvelope[E]) -> WireEnvelope[E]:
    """`envelope`, when its version and key kind are ones the edge writes; else EnvelopeError."""
    if envelope.v not in READABLE_VERSIONS:
        raise EnvelopeError(f"unsupported envelope version {envelope.v!r}")
    if envelope.key_kind not in KEY_KINDS:
        raise EnvelopeError(f"unknown key kind {envelope.key_kind!r}")
    return envelope


def _unreadable(data: bytes, error: msgspec.DecodeError) -> EnvelopeError:
    """Why `data` could not be read as an envelope: a version no reader knows (said first: a newer
    edge's envelope may lack fields this one requires), else not JSON or not an envelope."""
    version = _version_of(data)
    if version is not None and version not in READABLE_VERSIONS:
        return EnvelopeError(f"unsupported envelope version {version!r}")
    kind = "not an envelope" if isinstance(error, msgspec.ValidationError) else "not JSON"
    return EnvelopeError(f"{kind}: {error}")


def _version_of(data: bytes) -> object:
    try:
        value = _any_decoder.decode(data)
    except msgspec.DecodeError:
        return None
    return value.get("v") if isinstance(value, dict) else None
