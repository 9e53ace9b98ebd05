"""The envelope as the consumers read it: typed decoding with msgspec that builds Python objects only
for the fields a row needs and keeps `properties`, `traits` and `context` as the raw JSON the edge
wrote (they are stored whole, so decoding them into dicts and encoding them again was wasted
work: ~30% of the consume loop's time, bench/consumer.py).

The edge writes envelopes with `Envelope.encode` (core/wire/envelope.py); this module reads the versions
it has written (1 to 3) and refuses anything else with EnvelopeError (the message is
dead-lettered). An event's `context` that is absent is NULL itself (msgspec fills in the default
object), which is how rows tell it from an explicit `null` when applying a batch's context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from headwater.core.wire.envelope import READABLE_VERSIONS, EnvelopeError, unpack, utf8_repaired

NULL = msgspec.Raw(b"null")


class WireEvent(msgspec.Struct):
    """One Segment event; scalar fields as sent (any JSON type: rows turn them into text)."""

    type: Any = None
    event: Any = None
    name: Any = None
    messageId: Any = None
    anonymousId: Any = None
    userId: Any = None
    groupId: Any = None
    previousId: Any = None
    timestamp: Any = None
    sentAt: Any = None
    properties: msgspec.Raw = NULL
    traits: msgspec.Raw = NULL
    context: msgspec.Raw = NULL


class WireContext(msgspec.Struct):
    """What rows read from an event's context; the rest is skipped unread. `page` and `campaign`
    stay raw JSON: the enricher's page cache is keyed on it (consumers/enrich/enrich.py)."""

    page: msgspec.Raw = NULL
    campaign: msgspec.Raw = NULL
    userAgent: Any = None
    ip: Any = msgspec.UNSET  # UNSET: no `ip` key at all (not the same as "ip": null)


class WireEnvelope(msgspec.Struct):
    v: Any
    project: str
    request_id: str
    received_at: str
    events: list[WireEvent]
    key_kind: str = "public"
    ip: str | None = None
    user_agent: str | None = None
    origin: str | None = None
    sent_at: str | None = None  # version 2: the batch's sentAt (an event's own comes first)
    # version 3: the batch's context, for its events without one (and its integrations, unused)
    context: msgspec.Raw = NULL
    integrations: msgspec.Raw = NULL


class LooseEnvelope(msgspec.Struct):
    """An envelope whose events are kept as raw JSON: what is left to read when one of them is not
    an event, and what a dead letter of one event is written from."""

    v: Any
    project: str
    request_id: str
    received_at: str
    events: list[msgspec.Raw]
    key_kind: str = "public"
    ip: str | None = None
    user_agent: str | None = None
    origin: str | None = None
    sent_at: str | None = None
    context: msgspec.Raw = NULL
    integrations: msgspec.Raw = NULL


@dataclass(frozen=True, slots=True)
class BadEvent:
    """An event of an envelope that cannot become a row: its place in the envelope's `events`, and why."""

    index: int
    error: str


EMPTY_CONTEXT = WireContext()
_envelope_decoder = msgspec.json.Decoder(WireEnvelope)
_loose_decoder = msgspec.json.Decoder(LooseEnvelope)
_event_decoder = msgspec.json.Decoder(WireEvent)
_encoder = msgspec.json.Encoder()
_context_decoder = msgspec.json.Decoder(WireContext)
_any_decoder = msgspec.json.Decoder()


def decode_envelope(data: bytes) -> WireEnvelope:
    """The envelope in a message body (JSON, or LZ4-framed JSON: core/wire/envelope.py); EnvelopeError
    for anything that is not an envelope of a readable version, or holds an event that is not one."""
    envelope, bad = read_envelope(data)
    if bad:
        raise EnvelopeError(f"events[{bad[0].index}]: {bad[0].error}")
    return envelope


def read_envelope(data: bytes) -> tuple[WireEnvelope, list[BadEvent]]:
    """The envelope in a message body and the events of it that cannot be read (isolated, so the
    others are still stored); EnvelopeError when the envelope itself cannot be read.

    Bytes that are not UTF-8 (which edges before the check wrote) are replaced by U+FFFD, as the
    edge now does (core/wire/envelope.py utf8_repaired): such an event is stored, not dead-lettered."""
    data = utf8_repaired(unpack(data))
    try:
        return _checked(_envelope_decoder.decode(data)), []
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        error = exc
    try:
        loose = _loose_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        loose = None
    if loose is None:
        version = _version_of(data)
        if version is not None and version not in READABLE_VERSIONS:
            raise EnvelopeError(f"unsupported envelope version {version!r}") from None
        kind = "not an envelope" if isinstance(error, msgspec.ValidationError) else "not JSON"
        raise EnvelopeError(f"{kind}: {error}") from None
    events, bad = [], []
    for index, raw in enumerate(loose.events):
        try:
            events.append(_event_decoder.decode(raw))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            bad.append(BadEvent(index, f"not an event: {exc}"))
    if not bad:  # the fault is in the envelope, not in an event
        raise EnvelopeError(f"not an envelope: {error}") from None
    fields = {f: getattr(loose, f) for f in LooseEnvelope.__struct_fields__ if f != "events"}
    return _checked(WireEnvelope(events=events, **fields)), bad


def event_dead_letters(data: bytes, bad: list[BadEvent]) -> list[bytes]:
    """A dead letter for each bad event: the envelope in `data` (a message body) with only that
    event, so `headwater dlq replay` can put it back like any envelope."""
    loose = _loose_decoder.decode(utf8_repaired(unpack(data)))
    return [_encoder.encode(msgspec.structs.replace(loose, events=[loose.events[b.index]])) for b in bad]


def _checked(envelope: WireEnvelope) -> WireEnvelope:
    if envelope.v not in READABLE_VERSIONS:
        raise EnvelopeError(f"unsupported envelope version {envelope.v!r}")
    if envelope.key_kind not in ("public", "secret"):
        raise EnvelopeError(f"unknown key kind {envelope.key_kind!r}")
    return envelope


def _version_of(data: bytes) -> object:
    try:
        value = _any_decoder.decode(data)
    except msgspec.DecodeError:
        return None
    return value.get("v") if isinstance(value, dict) else None


def decode_context(raw: msgspec.Raw) -> WireContext:
    """The fields rows read from a context; EMPTY_CONTEXT when it is absent or not an object."""
    if raw is NULL or bytes(raw) == b"null":
        return EMPTY_CONTEXT
    try:
        return _context_decoder.decode(raw)
    except msgspec.ValidationError:
        return EMPTY_CONTEXT


def decode_any(raw: bytes | msgspec.Raw) -> Any:
    return _any_decoder.decode(raw)
