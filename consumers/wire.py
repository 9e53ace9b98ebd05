"""The envelope as the consumers read it: typed decoding with msgspec that builds Python objects only
for the fields a row needs and keeps `properties`, `traits` and `context` as the raw JSON the edge
wrote (they are stored whole, so decoding them into dicts and encoding them again was wasted
work: ~30% of the consume loop's time, bench/consumer.py).

The edge writes envelopes with `Envelope.encode` (core/wire/envelope.py); the envelope's fields,
the versions it has written (1 to 3) and the EnvelopeError for anything else (the message is
dead-lettered) are defined there, in `WireEnvelope` and `decode_wire_envelope`; this module says
how the consumers read the events. An event's `context` that is absent is NULL itself (msgspec
fills in the default object), which is how rows tell it from an explicit `null` when applying a
batch's context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from headwater.core.wire.envelope import (
    NULL,
    EnvelopeError,
    WireEnvelope,
    checked_envelope,
    decode_wire_envelope,
    unpack,
    utf8_repaired,
)


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


# The envelope as rows read it, and with its events kept as raw JSON: what is left to read when one
# of them is not an event, and what a dead letter of one event is written from.
ReadEnvelope = WireEnvelope[WireEvent]
LooseEnvelope = WireEnvelope[msgspec.Raw]


@dataclass(frozen=True, slots=True)
class BadEvent:
    """An event of an envelope that cannot become a row: its place in the envelope's `events`, and why."""

    index: int
    error: str


EMPTY_CONTEXT = WireContext()
_envelope_decoder = msgspec.json.Decoder(ReadEnvelope)
_loose_decoder = msgspec.json.Decoder(LooseEnvelope)
_event_decoder = msgspec.json.Decoder(WireEvent)
_encoder = msgspec.json.Encoder()
_context_decoder = msgspec.json.Decoder(WireContext)
_any_decoder = msgspec.json.Decoder()


def decode_envelope(data: bytes) -> ReadEnvelope:
    """The envelope in a message body (JSON, or LZ4-framed JSON: core/wire/envelope.py); EnvelopeError
    for anything that is not an envelope of a readable version, or holds an event that is not one."""
    envelope, bad = read_envelope(data)
    if bad:
        raise EnvelopeError(f"events[{bad[0].index}]: {bad[0].error}")
    return envelope


def read_envelope(data: bytes) -> tuple[ReadEnvelope, list[BadEvent]]:
    """The envelope in a message body and the events of it that cannot be read (isolated, so the
    others are still stored); EnvelopeError when the envelope itself cannot be read.

    Bytes that are not UTF-8 (which edges before the check wrote) are replaced by U+FFFD, as the
    edge now does (core/wire/envelope.py utf8_repaired): such an event is stored, not dead-lettered."""
    data = utf8_repaired(unpack(data))
    try:
        return checked_envelope(_envelope_decoder.decode(data)), []
    except msgspec.DecodeError as exc:  # (a ValidationError is one too)
        error = exc
    loose = decode_wire_envelope(data, _loose_decoder)
    events, bad = [], []
    for index, raw in enumerate(loose.events):
        try:
            events.append(_event_decoder.decode(raw))
        except msgspec.DecodeError as exc:
            bad.append(BadEvent(index, f"not an event: {exc}"))
    if not bad:  # the fault is in the envelope, not in an event
        raise EnvelopeError(f"not an envelope: {error}") from None
    fields = {f: getattr(loose, f) for f in WireEnvelope.__struct_fields__ if f != "events"}
    return ReadEnvelope(events=events, **fields), bad


def event_dead_letters(data: bytes, bad: list[BadEvent]) -> list[bytes]:
    """A dead letter for each bad event: the envelope in `data` (a message body) with only that
    event, so `headwater dlq replay` can put it back like any envelope."""
    loose = _loose_decoder.decode(utf8_repaired(unpack(data)))
    return [_encoder.encode(msgspec.structs.replace(loose, events=[loose.events[b.index]])) for b in bad]


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
