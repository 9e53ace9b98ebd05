"""What cookieless mode changes in the events themselves, before the envelope is made
(docs/privacy.md#cookieless-visitors): their anonymousId (before validation, so an event without
any id is valid under the mode) and the addresses their contexts name (after it: only networks
leave the edge). The ids come from edge/cookieless.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from msgspec import UNSET, Raw

from headwater.privacy.cookieless import CookielessMode, network_of, site_host

from .wire import SegmentEvent


def address_reduced(context: object, keep_network: bool) -> object:
    """An event's or a batch's context (raw JSON or parsed) whose top-level `ip` is reduced to its
    network (`keep_network`: a server's event) or removed (a browser's). A raw context is parsed
    only when its bytes may name an `ip` (possibly with escaped characters)."""
    if isinstance(context, Raw):
        data = bytes(context)
        if b'"ip"' not in data and b"\\u" not in data:
            return context
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return context  # (validation let it through: it is JSON)
        if not isinstance(parsed, dict) or "ip" not in parsed:
            return context
        return Raw(orjson.dumps(_reduced(parsed, keep_network)))
    if isinstance(context, dict) and "ip" in context:
        return _reduced(context, keep_network)
    return context


def _reduced(context: dict[str, Any], keep_network: bool) -> dict[str, Any]:
    address = context["ip"]
    network = network_of(address) if keep_network and isinstance(address, str) else None
    reduced = {key: value for key, value in context.items() if key != "ip"}
    if network is not None:
        reduced["ip"] = network
    return reduced


def reduce_addresses(events: list[Any], keep_network: bool) -> None:
    """address_reduced() for the context of each accepted event, in place."""
    for event in events:
        if isinstance(event, SegmentEvent):
            reduced = address_reduced(event.context, keep_network)
            if isinstance(reduced, Raw):
                event.context = reduced
        elif isinstance(event, dict) and "context" in event:
            event["context"] = address_reduced(event["context"], keep_network)


def _page_url(context: object) -> object:
    """context.page.url of an event's context (raw JSON or parsed), None when it has none."""
    if isinstance(context, Raw):
        data = bytes(context)
        if b'"page"' not in data:
            return None
        try:
            context = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
    page = context.get("page") if isinstance(context, dict) else None
    return page.get("url") if isinstance(page, dict) else None


def _has_anonymous_id(event: SegmentEvent | dict[str, Any]) -> bool:
    value = event.anonymousId if isinstance(event, SegmentEvent) else event.get("anonymousId")
    return value is not UNSET and value is not None and value != ""


async def assign_visitor_ids(
    events: list[Any],
    mode: CookielessMode,
    origin: str | None,
    batch_context: object,
    make_id: Callable[[str], Awaitable[str]],
) -> int:
    """Give each event (typed or parsed; anything else is left to validation) its cookieless
    anonymousId: under `always` every event, under `missing` those without one. Runs before
    validation, so an event that has no id at all is valid after it. `make_id(host)` makes the
    id for the site's host: the Origin's, else the page URL's of the event (or of the batch
    context). The number of events given one."""
    ids: dict[str, str] = {}
    given = 0
    for event in events:
        if not isinstance(event, SegmentEvent | dict):
            continue
        if mode == "missing" and _has_anonymous_id(event):
            continue
        host = site_host(origin)
        if not host:
            context = event.context if isinstance(event, SegmentEvent) else event.get("context")
            url = _page_url(context) if context is not UNSET and context is not None else None
            host = site_host(None, url if url is not None else _page_url(batch_context))
        visitor = ids.get(host)
        if visitor is None:
            visitor = ids[host] = await make_id(host)
        if isinstance(event, SegmentEvent):
            event.anonymousId = visitor
        else:
            event["anonymousId"] = visitor
        given += 1
    return given
