"""Typed decoding of ingest bodies with msgspec: the edge's fast path.

Most requests are well formed. For those, one C pass parses the body, checks each field's JSON type
and keeps `properties`, `traits`, `context` and `integrations` as the raw JSON the client sent: the
edge stores them whole, and parsing them into dicts to serialise them again was most of what a
batched event cost (docs/benchmarks.md). What remains in Python is a handful of checks per event.

This module only *recognises* events that certainly pass validation.py's rules. Whatever it is not
sure about (an unknown top-level field, a number where an id string belongs, an empty id, a null
object, a large or possibly deep event, a timestamp it cannot read) is handed to validation.py as
parsed JSON, which accepts it or names exactly what is wrong. The rules and the error messages stay
in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
import orjson
from msgspec import UNSET, Raw, UnsetType

from headwater.core.service.jsondepth import nesting_exceeds
from headwater.core.wire.envelope import utf8_repaired
from headwater.core.wire.timestamps import read_timestamp

from .errors import IngestError
from .ids import next_message_id
from .validation import EVENT_TYPES, MAX_MESSAGE_ID_LENGTH, MAX_NAME_LENGTH

Text = str | None | UnsetType
Object = Raw | UnsetType
_EVENT_TYPES = frozenset(EVENT_TYPES)
BATCH = "batch"
_OPEN_OBJECT, _OPEN_ARRAY = ord("{"), ord("[")
# The deepest body any request may be, checked before decoding (core/service/jsondepth.py): a batch's
# two levels around events that nest at most --max-nesting-depth (254 at most) levels. Deeper
# events in a shallower body are refused one by one with `too_deep`, as before.
MAX_BODY_DEPTH = 256


class SegmentEvent(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    """A Segment event made only of the fields the edge knows (others: the precise path).

    Untracked by the garbage collector (gc=False): its fields hold strings and raw JSON only, so
    it can never be part of a reference cycle, and 50 fewer tracked objects per batch mean fewer
    collections."""

    type: Text = UNSET
    event: Text = UNSET
    name: Text = UNSET
    category: Text = UNSET
    userId: Text = UNSET
    anonymousId: Text = UNSET
    groupId: Text = UNSET
    previousId: Text = UNSET
    messageId: Text = UNSET
    timestamp: Text = UNSET
    sentAt: Text = UNSET
    originalTimestamp: Text = UNSET
    channel: Text = UNSET
    properties: Object = UNSET
    traits: Object = UNSET
    context: Object = UNSET
    integrations: Object = UNSET
    # analytics.js sends these two; kept as sent.
    metadata: Object = msgspec.field(default=UNSET, name="_metadata")
    version: Object = UNSET
    writeKey: Text = UNSET  # never stored


class BatchBody(msgspec.Struct):
    batch: list[Raw]
    sentAt: Text = UNSET
    context: Object = UNSET
    integrations: Object = UNSET
    writeKey: Any = None


class TypedBatchBody(BatchBody):
    batch: list[SegmentEvent]  # type: ignore[assignment]


_event_decoder = msgspec.json.Decoder(SegmentEvent)
_batch_decoder = msgspec.json.Decoder(BatchBody)
_typed_batch_decoder = msgspec.json.Decoder(TypedBatchBody)
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Limits:
    max_event_bytes: int
    max_nesting_depth: int


@dataclass(frozen=True, slots=True)
class RequestBody:
    """A request body, read. `events` holds, for a single-event request, the event; for a batch,
    the `batch` value. An event is a SegmentEvent when the fast path accepted it (normalised like
    validation.py normalises), anything else is parsed JSON still to be validated."""

    events: Any
    write_key: object = None
    sent_at: object = None  # the batch's sentAt (a single event carries its own)
    defaults: dict[str, object] = field(default_factory=dict)  # a batch's context and integrations
    typed: bool = False  # read by the fast path
    all_typed: bool = False  # a batch whose events the fast path all accepted
    repaired: bool = False  # bytes that are not UTF-8 were replaced (envelope.utf8_repaired)


def read_body(kind: str, data: bytes, limits: Limits) -> RequestBody:
    """The body of a request to /v1/<kind> (an event type, or "batch"); IngestError 400
    `invalid_json` when it is not a JSON object, `too_deep` when it nests deeper than any request may
    (measured before decoding). Bytes that are not UTF-8 are replaced by U+FFFD first
    (envelope.utf8_repaired): what the edge accepts, a consumer can always decode."""
    if nesting_exceeds(data, MAX_BODY_DEPTH):
        raise IngestError(400, "too_deep", f"the body nests deeper than {MAX_BODY_DEPTH} levels")
    repaired = utf8_repaired(data)
    body = _read_body(kind, repaired, limits)
    return body if repaired is data else replace(body, repaired=True)


def _read_body(kind: str, data: bytes, limits: Limits) -> RequestBody:
    batch = kind == BATCH
    try:
        if batch:
            return _typed_batch(data, limits)
        event = _event_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _parsed(data, batch)
    write_key = None if event.writeKey is UNSET else event.writeKey
    if len(data) <= limits.max_event_bytes and accept(event, kind, limits.max_nesting_depth):
        return RequestBody(event, write_key, typed=True)
    return _parsed(data, batch)


def _typed_batch(data: bytes, limits: Limits) -> RequestBody:
    """A batch read in one pass when every event fits SegmentEvent and the body is no larger than
    one event may be (so no event can be over the limit); otherwise event by event, each
    event's size exact, the ones the fast path cannot take parsed for the precise path."""
    body: BatchBody
    events: list[Any]
    all_typed = True
    try:
        if len(data) > limits.max_event_bytes:
            raise _EventByEvent
        typed_body = _typed_batch_decoder.decode(data)
        body, events = typed_body, typed_body.batch
        max_depth = limits.max_nesting_depth
        for index, event in enumerate(events):
            if not accept(event, None, max_depth):
                events[index] = _parsed_event(event)
                all_typed = False
    except (_EventByEvent, msgspec.ValidationError):
        body = _batch_decoder.decode(data)
        events = []
        for raw in body.batch:
            typed = typed_event(raw, limits)
            if typed is None:
                all_typed = False
            events.append(typed if typed is not None else orjson.loads(bytes(raw)))
    sent_at = body.sentAt
    if type(sent_at) is str and read_timestamp(sent_at) is None:
        return _parsed(data, True)  # the precise path names the bad sentAt
    defaults: dict[str, object] = {
        name: value
        for name, value in (("context", body.context), ("integrations", body.integrations))
        if value is not UNSET and _starts_object(value)
    }
    sent_at = None if sent_at is UNSET else sent_at
    return RequestBody(events, body.writeKey, sent_at, defaults, typed=True, all_typed=all_typed)


class _EventByEvent(Exception):
    pass


def _parsed_event(event: SegmentEvent) -> Any:
    """An event the fast path did not accept, as parsed JSON for the precise path. accept()
    changes an event only once it has accepted it, so this is what was sent."""
    return orjson.loads(_encoder.encode(event))


def _parsed(data: bytes, batch: bool) -> RequestBody:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise IngestError(400, "invalid_json", "the body must be a JSON object")
    if not batch:
        return RequestBody(parsed, parsed.get("writeKey"))
    defaults = {k: parsed[k] for k in ("context", "integrations") if isinstance(parsed.get(k), dict)}
    return RequestBody(parsed.get("batch"), parsed.get("writeKey"), parsed.get("sentAt"), defaults)


def typed_event(raw: Raw, limits: Limits) -> SegmentEvent | None:
    """One event of a batch, accepted and normalised; None when the precise path must judge it."""
    if len(raw) > limits.max_event_bytes:
        return None
    try:
        event = _event_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return event if accept(event, None, limits.max_nesting_depth) else None


def accept(event: SegmentEvent, kind: str | None, max_depth: int) -> bool:
    """True when `event` certainly passes validation.validate_event as an event of `kind` (None:
    its own type); then normalised the same way: type set, no null ids, a messageId, no writeKey.

    It runs for every event: the common fields are checked first, the rarer ones only when present."""
    if kind is None:
        own_type = event.type
        if type(own_type) is not str:
            return False
        kind = own_type
    if kind not in _EVENT_TYPES:
        return False
    if event.context is not UNSET and not _object_fits(event.context, max_depth):
        return False
    if event.properties is not UNSET and not _object_fits(event.properties, max_depth):
        return False
    if (
        event.traits is not UNSET
        or event.integrations is not UNSET
        or event.metadata is not UNSET
        or event.version is not UNSET
    ) and not _other_objects_fit(event, max_depth):
        return False
    user_id, anonymous_id = event.userId, event.anonymousId
    if type(user_id) is str:
        if not 0 < len(user_id) <= MAX_NAME_LENGTH:
            return False
        if type(anonymous_id) is str and not 0 < len(anonymous_id) <= MAX_NAME_LENGTH:
            return False  # (an empty id is absent to the precise path)
    elif not (type(anonymous_id) is str and 0 < len(anonymous_id) <= MAX_NAME_LENGTH):
        return False
    # Times: absent, null or a string (the decoder allows nothing else); a string must read as one.
    stamp, sent_at, original = event.timestamp, event.sentAt, event.originalTimestamp
    if (
        (type(stamp) is str and read_timestamp(stamp) is None)
        or (type(sent_at) is str and read_timestamp(sent_at) is None)
        or (type(original) is str and read_timestamp(original) is None)
    ):
        return False
    if kind == "track":
        if not _is_name(event.event):
            return False
    elif kind in ("page", "screen"):
        if not (_absent(event.name) or _is_name(event.name)):
            return False
        if not (_absent(event.category) or _is_name(event.category)):
            return False
    elif kind == "group":
        if not _is_id(event.groupId):
            return False
    elif kind == "alias" and not _is_id(event.previousId):
        return False
    message_id = event.messageId
    if type(message_id) is not str:
        event.messageId = next_message_id()  # (null or absent: the decoder allows nothing else)
    elif not 0 < len(message_id) <= MAX_MESSAGE_ID_LENGTH:
        return False
    event.type = kind
    event.writeKey = UNSET
    if user_id is None:
        event.userId = UNSET
    if anonymous_id is None:
        event.anonymousId = UNSET
    return True


def accept_translated(event: SegmentEvent, max_depth: int) -> bool:
    """accept() for an event a translation built (snowplow.py) with `properties` and `context` set
    and every other field already as accept() would leave it: a known type, ids and names bounded
    and non-empty, timestamps it wrote itself, a messageId (filled before its size was judged).
    Only what the translation cannot know is judged — how deep the two objects nest. The property
    test of tests/test_snowplow_translate.py holds it to validation.py's rules."""
    assert event.properties is not UNSET and event.context is not UNSET
    assert event.messageId is not UNSET
    return _object_fits(event.properties, max_depth) and _object_fits(event.context, max_depth)


def _object_fits(value: Raw, max_depth: int) -> bool:
    """A properties/traits/context/integrations value: an object nesting fewer than `max_depth`
    levels. A field nests no deeper than the number of brackets it opens (brackets inside strings
    only overcount: then the precise path counts for real); with the event itself, fewer than
    max_depth is what validation.value_nests_deeper allows. A field shorter than 2 * max_depth cannot
    open max_depth brackets and is not counted."""
    data = bytes(value)
    return data[0] == _OPEN_OBJECT and (len(data) < 2 * max_depth or _openers(data) < max_depth)


def _openers(data: bytes) -> int:
    """How many `{` and `[` `data` holds. (A delete-replace finds them with memchr: ~40% cheaper
    than bytes.count of a single byte, which scans byte by byte.)"""
    openers = len(data) - len(data.replace(b"{", b""))
    if _OPEN_ARRAY in data:
        openers += len(data) - len(data.replace(b"[", b""))
    return openers


def _other_objects_fit(event: SegmentEvent, max_depth: int) -> bool:
    """The rarer object fields: traits and integrations as context and properties are checked;
    _metadata and version may be anything shallow enough."""
    for value in (event.traits, event.integrations):
        if value is not UNSET and not _object_fits(value, max_depth):
            return False
    for value in (event.metadata, event.version):
        if value is not UNSET and _openers(bytes(value)) >= max_depth:
            return False
    return True


def without_context_ip(context: Raw) -> Raw:
    """A context without its `ip` (only server-side senders may say where an event came from)."""
    if b'"ip"' not in bytes(context):
        return context
    parsed = orjson.loads(bytes(context))
    if isinstance(parsed, dict):
        parsed.pop("ip", None)
    return Raw(orjson.dumps(parsed))


def _absent(value: object) -> bool:
    return value is UNSET or value is None


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_LENGTH


def _is_name(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_NAME_LENGTH and bool(value.strip())


def _starts_object(value: Raw) -> bool:
    return bytes(value)[:1] == b"{"
