"""What cookieless mode changes in events at the edge, without NATS: the anonymousIds given before
validation and the addresses reduced after it (edge/cookieless_events.py). The ids themselves are
made by a stand-in that records the host it was asked for; tests/test_cookieless_edge.py makes them
for real."""

from __future__ import annotations

from typing import Any

import orjson
from msgspec import UNSET, Raw

from headwater.edge.cookieless_events import address_reduced, assign_visitor_ids, reduce_addresses
from headwater.edge.wire import SegmentEvent


class Ids:
    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def __call__(self, host: str) -> str:
        self.hosts.append(host)
        return f"cl_{host or 'nohost'}"


async def test_ids_follow_the_origin_else_the_page() -> None:
    ids = Ids()
    events: list[Any] = [
        {"type": "track", "event": "A", "context": {"page": {"url": "https://blog.example/a"}}},
        SegmentEvent(type="track", event="B", context=Raw(b'{"page":{"url":"https://shop.example/"}}')),
        {"type": "track", "event": "C"},  # the batch context's page
        "not an event",  # left to validation
    ]
    batch_context = {"page": {"url": "https://batch.example/"}}
    given = await assign_visitor_ids(events, "always", None, batch_context, ids)
    assert given == 3
    assert [events[0]["anonymousId"], events[1].anonymousId, events[2]["anonymousId"]] == [
        "cl_blog.example",
        "cl_shop.example",
        "cl_batch.example",
    ]
    # With an Origin, its host for all, made once per request.
    ids = Ids()
    events = [{"type": "track", "event": "A"}, {"type": "track", "event": "B", "anonymousId": "mine"}]
    assert await assign_visitor_ids(events, "always", "https://www.site.example", None, ids) == 2
    assert ids.hosts == ["www.site.example"]
    assert {e["anonymousId"] for e in events} == {"cl_www.site.example"}


async def test_missing_gives_ids_only_where_there_are_none() -> None:
    ids = Ids()
    events: list[Any] = [
        {"type": "track", "event": "A", "anonymousId": "mine"},
        {"type": "track", "event": "B", "anonymousId": ""},
        {"type": "track", "event": "C", "anonymousId": None, "userId": "u"},
        SegmentEvent(type="track", event="D", anonymousId="theirs"),
        SegmentEvent(type="track", event="E", userId="u"),
    ]
    assert await assign_visitor_ids(events, "missing", "https://a.example", None, ids) == 3
    assert [e["anonymousId"] for e in events[:3]] == ["mine", "cl_a.example", "cl_a.example"]
    assert (events[3].anonymousId, events[4].anonymousId) == ("theirs", "cl_a.example")


def test_addresses_become_networks_or_go() -> None:
    assert address_reduced({"ip": "203.0.113.9", "locale": "en"}, True) == {
        "ip": "203.0.113.0",
        "locale": "en",
    }
    assert address_reduced({"ip": "203.0.113.9", "locale": "en"}, False) == {"locale": "en"}
    assert address_reduced({"ip": "not an address"}, True) == {}  # nothing rather than the unknown
    untouched = Raw(b'{"locale":"en"}')
    assert address_reduced(untouched, True) is untouched
    escaped = address_reduced(Raw(b'{"\\u0069p":"2001:db8:1:2::9"}'), True)
    assert isinstance(escaped, Raw) and orjson.loads(bytes(escaped)) == {"ip": "2001:db8:1::"}
    events: list[Any] = [
        SegmentEvent(type="track", context=Raw(b'{"ip":"198.51.100.23"}')),
        SegmentEvent(type="track"),
        {"type": "track", "context": {"ip": "198.51.100.23"}},
    ]
    reduce_addresses(events, keep_network=True)
    assert bytes(events[0].context) == b'{"ip":"198.51.100.0"}'
    assert events[1].context is UNSET
    assert events[2]["context"] == {"ip": "198.51.100.0"}
