"""Jitsu's exports made into Segment events.

Jitsu (jitsucom/jitsu, "next") keeps its events in three shapes, told apart by their keys:

- its own event JSON (what `@jitsu/js` sends, Jitsu's event log, the bulker's `passthrough` data
  layout): a Segment event with `requestIp`, `receivedAt`, `writeKey` besides; segment.py reads it;
- rows of the bulker's `segment-single-table` layout (the default for warehouses): the event in
  snake_case, nested objects flattened with `_` (`context_page_url`), properties spread at the
  top level, an identify's traits in `context_traits_*` (`from_flat`);
- the `jitsu-legacy` layout, which is Jitsu Classic's event format: `eventn_ctx_event_id`,
  `event_type`, `utc_time`, `user: {id, anonymous_id, email, ...}`, `source_ip`, `url`,
  `page_title`, ..., nested or flattened (`user_id`) (`from_legacy`).

docs/import.md ("Past events") has the mapping field by field.
"""

from __future__ import annotations

from typing import Any

from .refusal import LineRefused
from .segment import event_time, require_type

# segment-single-table: top-level columns that are the event's own fields, not its properties.
_FLAT_FIELDS = {
    "message_id": "messageId",
    "type": "type",
    "event": "event",
    "name": "name",
    "category": "category",
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "group_id": "groupId",
    "previous_id": "previousId",
    "channel": "channel",
}
# Columns Jitsu or the bulker adds, read for the time or the address, else left out.
_FLAT_DROPPED = frozenset(
    {"timestamp", "original_timestamp", "received_at", "sent_at", "_timestamp", "write_key", "request_ip"}
)
_FLAT_TIMES = ("timestamp", "original_timestamp", "received_at", "_timestamp", "sent_at")
# Flattened context columns whose Segment names cannot be told from the snake_case alone.
_CONTEXT_PATHS: dict[str, tuple[str, ...]] = {
    "user_agent": ("userAgent",),
    "screen_inner_width": ("screen", "innerWidth"),
    "screen_inner_height": ("screen", "innerHeight"),
    "page_encoding": ("page", "encoding"),
}
_CONTEXT_OBJECTS = ("page", "campaign", "library", "screen", "os", "device", "app", "network", "location")
_OBJECT_KINDS = ("identify", "group")  # whose leftover columns are traits, not properties


def is_legacy(record: dict[str, Any]) -> bool:
    return "eventn_ctx_event_id" in record or "event_type" in record or "eventn_ctx" in record


def is_flat(record: dict[str, Any]) -> bool:
    return "message_id" in record and "messageId" not in record


def _context_path(rest: str) -> tuple[str, ...]:
    """Where a flattened `context_<rest>` column goes in `context`."""
    if rest in _CONTEXT_PATHS:
        return _CONTEXT_PATHS[rest]
    for name in _CONTEXT_OBJECTS:
        if rest.startswith(name + "_"):
            return (name, rest[len(name) + 1 :])
    if rest.startswith("traits_"):
        return ("traits", rest[len("traits_") :])
    return (rest,)


def _put(target: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    for name in path[:-1]:
        inner = target.get(name)
        if not isinstance(inner, dict):
            inner = target[name] = {}
        target = inner
    target[path[-1]] = value


def from_flat(record: dict[str, Any]) -> dict[str, Any]:
    """A row of the bulker's segment-single-table layout as a Segment event."""
    event: dict[str, Any] = {}
    nested = record.get("context")
    context: dict[str, Any] = dict(nested) if isinstance(nested, dict) else {}
    leftovers: dict[str, Any] = {}
    for key, value in record.items():
        if value is None:
            continue
        if key in _FLAT_FIELDS:
            event[_FLAT_FIELDS[key]] = value
        elif key.startswith("context_"):
            _put(context, _context_path(key[len("context_") :]), value)
        elif key in ("properties", "traits") and isinstance(value, dict):
            leftovers.update(value)
        elif key not in _FLAT_DROPPED and key != "context":
            leftovers[key] = value
    kind = require_type(event.get("type"))
    event["timestamp"] = event_time(record, _FLAT_TIMES)
    request_ip = record.get("request_ip")
    if "ip" not in context and isinstance(request_ip, str) and request_ip:
        context["ip"] = request_ip
    group_id = context.pop("groupId", None) or context.pop("group_id", None)
    if kind == "group" and "groupId" not in event and group_id is not None:
        event["groupId"] = group_id
    if kind == "identify" and isinstance(context.get("traits"), dict):
        leftovers = {**context.pop("traits"), **leftovers}  # Jitsu merged an identify's traits there
    if kind == "group" and isinstance(context.get("group"), dict):
        leftovers = {**context.pop("group"), **leftovers}
    if context:
        event["context"] = context
    if leftovers:
        event["traits" if kind in _OBJECT_KINDS else "properties"] = leftovers
    return event


# jitsu-legacy / Jitsu Classic.
_LEGACY_TYPES = {
    "pageview": "page",
    "page": "page",
    "screen": "screen",
    "identify": "identify",
    "user_identify": "identify",
    "group": "group",
    "alias": "alias",
}
_LEGACY_PAGE = {
    "url": "url",
    "doc_path": "path",
    "doc_search": "search",
    "page_title": "title",
    "referer": "referrer",
    "doc_encoding": "encoding",
}
_LEGACY_UTM = {
    "source": "source",
    "medium": "medium",
    "campaign": "name",
    "term": "term",
    "content": "content",
}
# Jitsu's own client fields with no Segment counterpart: kept under context.jitsu.
_LEGACY_JITSU = ("doc_host", "screen_resolution", "vp_size", "local_tz_offset", "click_id", "ids", "location")
_LEGACY_DROPPED = frozenset(
    {"eventn_ctx_event_id", "event_type", "utc_time", "_timestamp", "api_key", "src", "anon_ip", "parsed_ua"}
)
_USER_IDS = ("id", "anonymous_id", "hashed_anonymous_id", "internal_id")


def _legacy_user(record: dict[str, Any]) -> dict[str, Any]:
    """The `user` object, nested or flattened (`user_id`, `user_email`...)."""
    nested = record.get("user")
    user: dict[str, Any] = dict(nested) if isinstance(nested, dict) else {}
    for key, value in record.items():
        if key.startswith("user_") and key not in ("user_agent", "user_language") and value is not None:
            user.setdefault(key[len("user_") :], value)
    return user


def from_legacy(record: dict[str, Any]) -> dict[str, Any]:
    """An event of Jitsu Classic's format (the bulker's jitsu-legacy layout) as a Segment event."""
    nested_ctx = record.get("eventn_ctx")
    if isinstance(nested_ctx, dict):  # the oldest Classic events nest everything in eventn_ctx
        record = {**nested_ctx, **{k: v for k, v in record.items() if k != "eventn_ctx"}}
        record.setdefault("eventn_ctx_event_id", nested_ctx.get("event_id"))
    event_type = record.get("event_type")
    if event_type is None or event_type == "":
        raise LineRefused("missing_type", "the event has no event_type", "event_type")
    if not isinstance(event_type, str):
        raise LineRefused("invalid_type", "event_type must be a string", "event_type")
    kind = _LEGACY_TYPES.get(event_type, "track")
    event: dict[str, Any] = {"type": kind}
    if kind == "track":
        event["event"] = event_type
    message_id = record.get("eventn_ctx_event_id")
    if message_id is not None and message_id != "":
        event["messageId"] = message_id
    user = _legacy_user(record)
    if user.get("id") not in (None, ""):
        event["userId"] = user["id"]
    anonymous = user.get("anonymous_id") or user.get("hashed_anonymous_id")
    if anonymous not in (None, ""):
        event["anonymousId"] = anonymous
    event["timestamp"] = event_time(record, ("utc_time", "_timestamp"))
    context: dict[str, Any] = {}
    page = {name: record[key] for key, name in _LEGACY_PAGE.items() if record.get(key) not in (None, "")}
    if page:
        context["page"] = page
    campaign = _legacy_campaign(record)
    if campaign:
        context["campaign"] = campaign
    for key, name in (("source_ip", "ip"), ("user_agent", "userAgent"), ("user_language", "locale")):
        if record.get(key) not in (None, ""):
            context[name] = record[key]
    jitsu = {key: record[key] for key in _LEGACY_JITSU if record.get(key) not in (None, "", {})}
    if jitsu:
        context["jitsu"] = jitsu
    traits = {k: v for k, v in user.items() if k not in _USER_IDS and v is not None}
    if traits and kind != "identify":
        context["traits"] = traits
    if context:
        event["context"] = context
    consumed = set(_LEGACY_PAGE) | set(_LEGACY_JITSU) | _LEGACY_DROPPED
    consumed |= {"user", "source_ip", "user_agent", "user_language", "utm"}
    leftovers = {
        key: value
        for key, value in record.items()
        if key not in consumed and not key.startswith(("user_", "utm_")) and value is not None
    }
    if kind == "identify":
        event["traits"] = {**traits, **leftovers}
    elif leftovers:
        event["properties"] = leftovers
    return event


def _legacy_campaign(record: dict[str, Any]) -> dict[str, Any]:
    utm = record.get("utm")
    source: dict[str, Any] = dict(utm) if isinstance(utm, dict) else {}
    for key, value in record.items():
        if key.startswith("utm_") and value is not None:
            source.setdefault(key[len("utm_") :], value)
    return {_LEGACY_UTM.get(key, key): value for key, value in source.items() if value not in (None, "")}
