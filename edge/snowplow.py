"""The Snowplow tracker protocol, translated into Segment-shaped events (docs/ingest-api.md, Snowplow).

Snowplow trackers send each event as a flat map of short string parameters (`e`, `eid`, `dtm`, …):
many in a `payload_data` self-describing JSON posted to `/com.snowplowanalytics.snowplow/tp2`, or
one in the query string of the `GET /i` pixel. Each becomes the Segment event the rest of the edge
already knows (page or track), so validation, limits, the envelope and the consumers' columns are
those of Segment events. An event that cannot be translated becomes an IngestError in its place:
the ingest pipeline refuses it alone and stores the others (IngestService.ingest_events).
"""

from __future__ import annotations

import base64
import binascii
import time
from functools import lru_cache
from typing import Any, cast
from urllib.parse import parse_qsl

import msgspec
import orjson
from msgspec import UNSET

from headwater.core.service.jsondepth import nesting_exceeds
from headwater.core.wire.envelope import utf8_repaired

from .errors import IngestError
from .ids import next_message_id
from .validation import MAX_MESSAGE_ID_LENGTH, MAX_NAME_LENGTH, validate_event
from .wire import MAX_BODY_DEPTH, Limits, SegmentEvent, accept_translated

TP2_PATH = "/com.snowplowanalytics.snowplow/tp2"
PIXEL_PATH = "/i"
# Every published revision of the envelope (iglu-central payload_data 1-0-0 … 1-0-4); later ones
# only added optional parameters, all strings.
PAYLOAD_DATA_SCHEMAS = frozenset(
    f"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-{minor}" for minor in range(5)
)
STRUCTURED_EVENT_NAME_FIELD = "se_ac"  # a structured event is a track named after its action
PAGE_PING_EVENT = "Page Ping"
# Parameters the translation places elsewhere; whatever else an event carries is kept under
# context.snowplow (tracker, platform, viewport, …).
_MAPPED = frozenset(
    {
        "e", "eid", "aid", "uid", "duid", "nuid", "tnuid", "sid", "vid", "url", "page", "refr",
        "ua", "lang", "tz", "res", "ip", "dtm", "stm", "ttm", "co", "cx", "ue_pr", "ue_px",
        "se_ca", "se_ac", "se_la", "se_pr", "se_va", "pp_mix", "pp_max", "pp_miy", "pp_may",
    }
)  # fmt: skip
_PAGE_PING_OFFSETS = (("pp_mix", "min_x"), ("pp_max", "max_x"), ("pp_miy", "min_y"), ("pp_may", "max_y"))
_STRUCTURED_FIELDS = (("se_ca", "category"), ("se_ac", "action"), ("se_la", "label"), ("se_pr", "property"))
_MAX_EPOCH_MS = "253402300799999"  # 9999-12-31T23:59:59.999Z, as the 15 digits of the longest

SnowplowEvent = dict[str, str]
# An event the fast path's rules accept (wire.accept); parsed JSON validation.py accepted (a case
# wire.accept is unsure of); or why it is refused.
Translated = SegmentEvent | dict[str, Any] | IngestError


class _Payload(msgspec.Struct):
    schema: str
    data: list[SnowplowEvent]


class _LoosePayload(msgspec.Struct):
    schema: str
    data: list[Any]


class _SelfDescribingJson(msgspec.Struct):
    schema: str
    data: msgspec.Raw


class _UnstructEvent(msgspec.Struct):  # the ue_pr/ue_px envelope around the event's own JSON
    data: _SelfDescribingJson


class _Contexts(msgspec.Struct):  # co/cx: the entities, kept raw
    data: msgspec.Raw


_payload_decoder = msgspec.json.Decoder(_Payload)
_loose_decoder = msgspec.json.Decoder(_LoosePayload)
_unstruct_decoder = msgspec.json.Decoder(_UnstructEvent)
_contexts_decoder = msgspec.json.Decoder(_Contexts)
_encoder = msgspec.json.Encoder()


def read_tp2(body: bytes, max_events: int) -> list[SnowplowEvent | IngestError]:
    """The events of a tp2 POST body; IngestError for the whole body when it is not a payload_data
    of a known revision, per event (in its place) when one is not a map of strings."""
    if nesting_exceeds(body, MAX_BODY_DEPTH):
        raise IngestError(400, "too_deep", f"the body nests deeper than {MAX_BODY_DEPTH} levels")
    body = utf8_repaired(body)
    events: list[Any]
    try:
        payload = _payload_decoder.decode(body)
        schema, events = payload.schema, payload.data
        typed = True
    except msgspec.ValidationError:
        try:
            loose = _loose_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise IngestError(400, "invalid_payload", f"not a Snowplow payload_data: {exc}") from None
        except msgspec.DecodeError as exc:
            raise IngestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
        schema, events = loose.schema, loose.data
        typed = False
    except msgspec.DecodeError as exc:
        raise IngestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if schema not in PAYLOAD_DATA_SCHEMAS:
        raise IngestError(
            400,
            "unsupported_schema",
            "schema must be iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-0 … 1-0-4",
            "schema",
        )
    if not events:
        raise IngestError(400, "invalid_batch", "data must be a non-empty list of events", "data")
    if len(events) > max_events:
        raise IngestError(413, "too_many_events", f"a request may hold at most {max_events} events", "data")
    if typed:  # every event a map of strings: the list as decoded
        return cast(list[SnowplowEvent | IngestError], events)
    return [_string_map(event) for event in events]


def read_pixel(query_string: bytes) -> SnowplowEvent:
    """The event of a `GET /i` request: its query parameters (the first of a repeated one)."""
    text = utf8_repaired(query_string).decode("utf-8")
    event: SnowplowEvent = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        event.setdefault(name, value)
    return event


def _string_map(event: object) -> SnowplowEvent | IngestError:
    if not isinstance(event, dict):
        return IngestError(400, "invalid_event", "a Snowplow event must be a JSON object")
    for name, value in event.items():
        if not isinstance(value, str):
            return IngestError(400, "invalid_field", f"{name} must be a string", name)
    return event


def translate(sp: SnowplowEvent, limits: Limits) -> Translated:
    """The Segment event of one Snowplow event, or the IngestError that refuses it. Built as the
    fast path's typed event (properties and context raw JSON), valid by construction but for the
    objects' depth, which the fast path judges (wire.accept_translated), so that a translated event
    costs what a Segment one does; what it is unsure of, validation.py judges as it would a Segment
    event."""
    try:
        event, properties, context = _translate(sp)
    except IngestError as error:
        return error
    if event.messageId is UNSET:
        # Filled before the size is judged: an event without one (no `eid`) grows by it, and one
        # just under the limit would be handed on over it.
        event.messageId = next_message_id()
    properties_json, context_json = _encoder.encode(properties), _encoder.encode(context)
    event.properties, event.context = msgspec.Raw(properties_json), msgspec.Raw(context_json)
    # At most what the event encodes to (a character of the other fields' strings takes at most 6
    # bytes of JSON, their names and punctuation under 200): measured exactly only when that is over.
    size = len(properties_json) + len(context_json) + 6 * _text_length(event) + 200
    if size > limits.max_event_bytes:
        size = len(_encoder.encode(event))
        if size > limits.max_event_bytes:
            return IngestError(
                413, "event_too_large", f"an event may be at most {limits.max_event_bytes} bytes"
            )
    if accept_translated(event, limits.max_nesting_depth):
        return event
    try:
        parsed = orjson.loads(_encoder.encode(event))
        return validate_event(parsed, None, limits.max_event_bytes, size, limits.max_nesting_depth)
    except IngestError as error:
        return error


def _text_length(event: SegmentEvent) -> int:
    """The characters of the string fields a translation sets."""
    texts = (
        event.type,
        event.event,
        event.userId,
        event.anonymousId,
        event.messageId,
        event.timestamp,
        event.sentAt,
    )
    return sum([len(text) for text in texts if type(text) is str])


def _translate(sp: SnowplowEvent) -> tuple[SegmentEvent, dict[str, Any] | msgspec.Raw, dict[str, Any]]:
    """The event with its fields but properties and context, and those two."""
    kind = sp.get("e")
    context: dict[str, Any] = {}
    page: dict[str, str] = {}
    url, title, referrer = sp.get("url"), sp.get("page"), sp.get("refr")
    if url:
        page["url"] = url
    if title:
        page["title"] = title
    if referrer:
        page["referrer"] = referrer
    if page:
        context["page"] = page
    properties: dict[str, Any] | msgspec.Raw
    if kind == "pv":
        event = SegmentEvent(type="page")
        properties = dict(page)
    elif kind == "se":
        event = SegmentEvent(type="track", event=_name(sp, STRUCTURED_EVENT_NAME_FIELD))
        properties = _structured(sp)
    elif kind == "ue":
        schema, properties = _self_describing(sp)
        event = SegmentEvent(type="track", event=_event_name(schema))
        context["snowplow_event_schema"] = schema
    elif kind == "pp":
        event = SegmentEvent(type="track", event=PAGE_PING_EVENT)
        offsets = {name: _integer(sp, param) for param, name in _PAGE_PING_OFFSETS if param in sp}
        properties = {**page, **offsets}
    elif kind is None:
        raise IngestError(400, "missing_field", "a Snowplow event needs e (its type)", "e")
    else:
        raise IngestError(
            400, "unsupported_event", f"event type e={kind!r} is not supported: use pv, pp, se or ue", "e"
        )
    _identify(sp, event, context)
    _times(sp, event)
    _client(sp, context)
    contexts = _contexts(sp)
    if contexts is not None:
        context["snowplow_contexts"] = contexts
    others = {name: value for name, value in sp.items() if name not in _MAPPED}
    if others:
        context["snowplow"] = others
    return event, properties, context


def _identify(sp: SnowplowEvent, event: SegmentEvent, context: dict[str, Any]) -> None:
    message_id = sp.get("eid")
    if message_id:
        if len(message_id) > MAX_MESSAGE_ID_LENGTH:
            raise IngestError(
                400, "invalid_field", f"eid is longer than {MAX_MESSAGE_ID_LENGTH} characters", "eid"
            )
        event.messageId = message_id
    user_id = sp.get("uid")
    if user_id:
        event.userId = _bounded(user_id, "uid")
    # The device's own id first; a network id (the collector cookie, or the tracker's) otherwise.
    for param in ("duid", "nuid", "tnuid"):
        anonymous_id = sp.get(param)
        if anonymous_id:
            event.anonymousId = _bounded(anonymous_id, param)
            break
    if event.userId is UNSET and event.anonymousId is UNSET:
        raise IngestError(400, "missing_field", "a Snowplow event needs uid, duid or nuid", "duid")
    session = sp.get("sid")
    if session:
        context["sessionId"] = _bounded(session, "sid")
    if "vid" in sp:
        context["sessionIndex"] = _integer(sp, "vid")


def _times(sp: SnowplowEvent, event: SegmentEvent) -> None:
    """Snowplow's derived timestamp on our skew correction (consumers/enrich/timestamps.py, which
    takes received_at - (sentAt - timestamp)). Snowplow's enrich: the true time `ttm` as sent;
    else collector - (stm - dtm) when the device stamped the event before sending it; else the
    collector's time. The same pairs give the same times here: `ttm` alone (no sentAt: kept
    as is), dtm with stm, or dtm as both (no difference: the arrival time)."""
    true_time = sp.get("ttm")
    if true_time:
        event.timestamp = _iso_ms(true_time, "ttm")
        return
    device_time = sp.get("dtm")
    if not device_time:
        return  # no device time: the arrival time
    event.timestamp = stamp = _iso_ms(device_time, "dtm")
    sent_time = sp.get("stm")
    if sent_time:
        sent = _iso_ms(sent_time, "stm")
        event.sentAt = sent if int(device_time) < int(sent_time) else stamp
    else:
        event.sentAt = stamp


def _client(sp: SnowplowEvent, context: dict[str, Any]) -> None:
    for param, name in (("ua", "userAgent"), ("lang", "locale"), ("tz", "timezone"), ("ip", "ip")):
        value = sp.get(param)
        if value:
            context[name] = value
    resolution = sp.get("res")
    if resolution:
        width, _, height = resolution.partition("x")
        if width.isdigit() and height.isdigit():
            context["screen"] = {"width": int(width), "height": int(height)}
    tracker = sp.get("tv")
    if tracker:
        context["library"] = {"name": "snowplow", "version": tracker}


def _structured(sp: SnowplowEvent) -> dict[str, Any]:
    if not sp.get("se_ca"):
        raise IngestError(400, "missing_field", "a structured event (se) needs se_ca", "se_ca")
    properties: dict[str, Any] = {}
    for param, name in _STRUCTURED_FIELDS:
        if param in sp:
            properties[name] = sp[param]
    if sp.get("se_va"):
        try:
            properties["value"] = float(sp["se_va"])
        except ValueError:
            raise IngestError(400, "invalid_field", "se_va must be a number", "se_va") from None
    return properties


def _self_describing(sp: SnowplowEvent) -> tuple[str, msgspec.Raw]:
    """The schema and data (raw JSON) of an `ue` event's self-describing JSON (in its
    unstruct_event envelope)."""
    found = _json_param(sp, "ue_pr", "ue_px")
    if found is None:
        raise IngestError(400, "missing_field", "a self-describing event (ue) needs ue_pr or ue_px", "ue_pr")
    field, raw = found
    try:
        inner = _unstruct_decoder.decode(raw).data
    except (msgspec.ValidationError, msgspec.DecodeError):
        inner = None
    if inner is None or not inner.schema.startswith("iglu:") or bytes(inner.data)[:1] != b"{":
        raise IngestError(
            400,
            "invalid_field",
            f"{field} must be an unstruct_event JSON whose data is {{schema: 'iglu:…', data: {{…}}}}",
            field,
        )
    return inner.schema, inner.data


def _event_name(schema: str) -> str:
    """`iglu:com.acme/button_click/jsonschema/1-0-0` → `com.acme/button_click`: the event keeps its
    name across schema versions (the whole schema is in context.snowplow_event_schema)."""
    vendor, _, rest = schema[len("iglu:") :].partition("/")
    name = rest.partition("/")[0]
    if not vendor or not name:
        raise IngestError(
            400, "invalid_field", f"schema {schema!r} is not iglu:vendor/name/format/version", "ue_pr"
        )
    return _bounded(f"{vendor}/{name}", "ue_pr")


def _contexts(sp: SnowplowEvent) -> msgspec.Raw | None:
    """The entities of `co`/`cx` (a contexts self-describing JSON): its data, a list of
    self-describing JSONs, kept as sent (raw JSON)."""
    found = _json_param(sp, "co", "cx")
    if found is None:
        return None
    field, raw = found
    try:
        data: msgspec.Raw | None = _contexts_decoder.decode(raw).data
    except (msgspec.ValidationError, msgspec.DecodeError):
        data = None
    if data is None or bytes(data)[:1] != b"[":
        raise IngestError(400, "invalid_field", f"{field} must be a contexts JSON with a data list", field)
    return data


def _json_param(sp: SnowplowEvent, plain: str, encoded: str) -> tuple[str, bytes] | None:
    """The JSON of a parameter sent plain (`plain`) or base64url-encoded (`encoded`), as bytes."""
    text = sp.get(plain)
    field = plain
    raw: bytes
    if text:
        raw = text.encode("utf-8")
    else:
        text = sp.get(encoded)
        if not text:
            return None
        field = encoded
        try:  # base64url, with or without its padding
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise IngestError(400, "invalid_field", f"{field} is not base64url", field) from None
    if nesting_exceeds(raw, MAX_BODY_DEPTH):  # deeper than any event may be: not decoded
        raise IngestError(400, "too_deep", f"{field} nests deeper than {MAX_BODY_DEPTH} levels", field)
    return field, raw


def _name(sp: SnowplowEvent, param: str) -> str:
    value = sp.get(param)
    if not value or not value.strip():
        raise IngestError(400, "missing_field", f"this event needs {param}", param)
    return _bounded(value, param)


def _bounded(value: str, param: str) -> str:
    if len(value) > MAX_NAME_LENGTH:
        raise IngestError(400, "invalid_field", f"{param} is longer than {MAX_NAME_LENGTH} characters", param)
    return value


def _integer(sp: SnowplowEvent, param: str) -> int:
    text = sp[param]
    if not text.lstrip("-").isdigit() or len(text) > 18:
        raise IngestError(400, "invalid_field", f"{param} must be an integer", param)
    return int(text)


def _iso_ms(text: str, param: str) -> str:
    """The time of `text`, milliseconds since the epoch, in ISO-8601 in UTC with milliseconds, as
    Segment libraries write it. Twice per event, so it works on the digits: the seconds' text is
    cached (events come in the same seconds), the milliseconds are the last three digits."""
    length = len(text)
    if not (
        text.isascii()
        and text.isdigit()
        and (length < len(_MAX_EPOCH_MS) or (length == len(_MAX_EPOCH_MS) and text <= _MAX_EPOCH_MS))
    ):
        raise IngestError(400, "invalid_timestamp", f"{param} must be milliseconds since the epoch", param)
    if length < 4:
        text = text.zfill(4)
    return f"{_iso_seconds(text[:-3])}.{text[-3:]}Z"


@lru_cache(maxsize=4096)
def _iso_seconds(seconds: str) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(seconds)))
