"""The edge's fast path (edge/wire.py) against its precise path (edge/validation.py).

The fast path may hand any event to the precise path, but an event it accepts itself must be one
the precise path accepts too, normalised the same way. Property-tested over events mixing valid and
invalid fields (each also asserts that the fast path took a share of them, so that it cannot pass
by accepting nothing); plus checks that plain events and the events real senders send do take the
fast path (it is what makes a batched event cheap: docs/benchmarks.md)."""

from __future__ import annotations

import copy
from typing import Any

import hypothesis
import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.edge.errors import IngestError
from headwater.edge.validation import EVENT_TYPES, validate_event
from headwater.edge.wire import Limits, SegmentEvent, read_body, typed_event, without_context_ip

LIMITS = Limits(max_event_bytes=600, max_nesting_depth=4)
ABSENT = object()


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for level in range(depth - 1):
        value = {f"level{level}": [value] if level % 2 else value}
    return value


def mostly(usual: list[Any], unusual: list[Any]) -> st.SearchStrategy[Any]:
    """Usual values 19 times in 20, so that many generated events are valid and the fast path's
    acceptance is what gets tested."""
    return st.integers(0, 19).flatmap(lambda n: st.sampled_from(unusual if n == 0 else usual))


texts = mostly(["u", "a-1", None, ABSENT], ["", " ", 42, 1.5, True, "x" * 1001, ["u"]])
names = mostly(["Product Added", None, ABSENT], ["", "  ", 7, "n" * 1001])
message_ids = mostly(["m-1", "m" * 100, ABSENT], ["", "m" * 101, None, 5])
times = mostly(
    ["2026-01-15T10:20:30.123Z", "2026-01-15T10:20:30+02:00", "2026-01-15 10:20:30", "2026-01-15", ABSENT],
    ["yesterday", "9" * 70, "2026-01-15T10:20:30." + "1" * 50 + "Z", None, 12],
)
objects = mostly(
    [{}, {"a": 1, "b": [1, 2]}, nested(2), nested(3), {"ip": "198.51.100.9", "locale": "de"}, ABSENT],
    [{"s": "{{{{[[[["}, nested(4), nested(6), [], "text", None, {"a": "x" * 400}],
)
kinds = mostly(list(EVENT_TYPES), ["teleport", None, 3, ABSENT])


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    fields = {
        "type": draw(kinds),
        "userId": draw(texts),
        "anonymousId": draw(texts),
        "event": draw(names),
        "name": draw(names),
        "category": draw(names),
        "groupId": draw(texts),
        "previousId": draw(texts),
        "messageId": draw(message_ids),
        "timestamp": draw(times),
        "sentAt": draw(times),
        "originalTimestamp": draw(times),
        "properties": draw(objects),
        "traits": draw(objects),
        "context": draw(objects),
        "integrations": draw(objects),
        "_metadata": draw(objects),
        "writeKey": draw(mostly([ABSENT], ["hwpk_x"])),
        "somethingElse": draw(mostly([ABSENT], [1])),
    }
    return {name: value for name, value in fields.items() if value is not ABSENT}


def precise(
    event: dict[str, Any], kind: str | None, size: int, limits: Limits = LIMITS
) -> dict[str, Any] | IngestError:
    try:
        return validate_event(
            copy.deepcopy(event), kind, limits.max_event_bytes, size, limits.max_nesting_depth
        )
    except IngestError as error:
        return error


def assert_same_as_precise(
    fast: SegmentEvent, sent: dict[str, Any], kind: str | None, size: int, limits: Limits = LIMITS
) -> None:
    expected = precise(sent, kind, size, limits)
    assert not isinstance(expected, IngestError), (
        f"fast path accepted what the precise path refuses: {expected}"
    )
    got = orjson.loads(msgspec.json.encode(fast))
    if sent.get("messageId") is None:  # both assigned one: any will do, but there must be one
        assert isinstance(got.pop("messageId"), str)
        expected.pop("messageId")
    assert got == expected


class FastShare:
    """How many events the fast path took. A property about the events it accepts holds vacuously
    if it accepts none, so each such test also asserts that it took at least a known share (about
    half of what it takes on these strategies: 8% of `events()` in a batch, 15% as single events)."""

    def __init__(self) -> None:
        self.fast = 0
        self.total = 0

    def count(self, fast: bool) -> None:
        self.fast += fast
        self.total += 1

    def assert_at_least(self, share: float) -> None:
        assert self.total > 0
        assert self.fast >= share * self.total, f"the fast path took {self.fast} of {self.total} events"


def test_a_batched_event_the_fast_path_accepts_is_valid_and_normalised_alike() -> None:
    taken = FastShare()

    @settings(max_examples=1500, deadline=None)
    @given(event=events())
    def check(event: dict[str, Any]) -> None:
        raw = orjson.dumps(event)
        fast = typed_event(msgspec.Raw(raw), LIMITS)
        hypothesis.event("fast path" if fast is not None else "precise path")
        taken.count(fast is not None)
        if fast is not None:
            assert_same_as_precise(fast, event, None, len(raw))

    check()
    taken.assert_at_least(0.04)


def test_a_batch_read_in_one_pass_matches_the_precise_path_event_by_event() -> None:
    taken = FastShare()

    @settings(max_examples=500, deadline=None)
    @given(batch=st.lists(events(), min_size=1, max_size=4))
    def check(batch: list[dict[str, Any]]) -> None:
        limits = Limits(max_event_bytes=32 * 1024, max_nesting_depth=4)  # one pass: the body fits
        read = read_body("batch", orjson.dumps({"batch": batch}), limits)
        assert read.typed and len(read.events) == len(batch)
        hypothesis.event(f"{sum(isinstance(e, SegmentEvent) for e in read.events)} of {len(batch)} fast")
        for got, sent in zip(read.events, batch, strict=True):
            taken.count(isinstance(got, SegmentEvent))
            if isinstance(got, SegmentEvent):
                assert_same_as_precise(got, sent, None, 0, limits)
            else:
                assert got == sent  # parsed for the precise path, as sent

    check()
    taken.assert_at_least(0.04)


def test_a_single_event_the_fast_path_accepts_is_valid_and_normalised_alike() -> None:
    taken = FastShare()

    @settings(max_examples=1000, deadline=None)
    @given(event=events(), kind=st.sampled_from(EVENT_TYPES))
    def check(event: dict[str, Any], kind: str) -> None:
        raw = orjson.dumps(event)
        body = read_body(kind, raw, LIMITS)
        hypothesis.event("fast path" if body.typed else "precise path")
        taken.count(body.typed)
        if body.typed:
            assert isinstance(body.events, SegmentEvent)
            assert body.write_key == event.get("writeKey")
            assert_same_as_precise(body.events, event, kind, len(raw))
        else:
            assert body.events == event  # parsed for the precise path, untouched

    check()
    taken.assert_at_least(0.07)


@st.composite
def plain_events(draw: st.DrawFn) -> dict[str, Any]:
    """Events with nothing unusual in them: small, every field of the right type and within its
    limits, the ids their type requires present. The fast path must take every one."""
    kind = draw(st.sampled_from(EVENT_TYPES))
    ids = draw(st.sampled_from([{"userId": "u"}, {"anonymousId": "a"}, {"userId": "u", "anonymousId": None}]))
    required = {"track": {"event": "E"}, "group": {"groupId": "g"}, "alias": {"previousId": "p"}}
    optional = {
        "messageId": st.sampled_from(["m-1", "m" * 100, None]),
        "timestamp": st.sampled_from(["2026-01-15T10:20:30.123Z", "2026-01-15T10:20:30+02:00", None]),
        "sentAt": st.sampled_from(["2026-01-15 10:20:30", "2026-01-15"]),
        "properties": st.sampled_from([{}, {"a": 1, "b": [1, 2]}, nested(2)]),
        "context": st.sampled_from([{"locale": "de"}, nested(2)]),
        "integrations": st.just({}),
    }
    present = draw(st.lists(st.sampled_from(sorted(optional)), unique=True))
    return {
        "type": kind,
        **ids,
        **required.get(kind, {}),
        **{name: draw(optional[name]) for name in present},
    }


@settings(max_examples=300, deadline=None)
@given(event=plain_events())
def test_the_fast_path_takes_every_plain_event(event: dict[str, Any]) -> None:
    raw = orjson.dumps(event)
    fast = typed_event(msgspec.Raw(raw), LIMITS)
    assert fast is not None, f"the fast path refused {event}"
    assert_same_as_precise(fast, event, None, len(raw))
    assert read_body(str(event["type"]), raw, LIMITS).typed


VALID_BY_TYPE = {
    "track": {"type": "track", "event": "E", "userId": "u", "anonymousId": "a"},
    "page": {"type": "page", "name": "Home", "category": "Docs", "anonymousId": "a"},
    "screen": {"type": "screen", "name": "Home", "userId": "u"},
    "identify": {"type": "identify", "userId": "u", "traits": {"plan": "pro"}},
    "group": {"type": "group", "groupId": "g", "userId": "u"},
    "alias": {"type": "alias", "previousId": "p", "userId": "u"},
}
UNUSUAL = {
    "text": ["", " ", None, 42, True, "x" * 1001, ["u"]],
    "time": ["yesterday", "2026-01-15T10:20:30." + "1" * 50 + "Z", "2026-01-15", None, 12],
    "object": [[], "text", None, nested(4), nested(6), {"s": "{{{{"}],
}
FIELD_KINDS = {
    **dict.fromkeys(["type", "event", "name", "category", "userId", "anonymousId"], "text"),
    **dict.fromkeys(["groupId", "previousId", "messageId", "channel"], "text"),
    **dict.fromkeys(["timestamp", "sentAt", "originalTimestamp"], "time"),
    **dict.fromkeys(["properties", "traits", "context", "integrations", "_metadata", "version"], "object"),
}


@pytest.mark.parametrize("kind", list(VALID_BY_TYPE))
def test_every_single_field_deviation_is_judged_like_the_precise_path(kind: str) -> None:
    """Each field of a valid event set, one at a time, to each unusual value (an exhaustive
    complement to the random mixtures above)."""
    fast_taken = 0
    for field, field_kind in FIELD_KINDS.items():
        for value in UNUSUAL[field_kind]:
            event = {**VALID_BY_TYPE[kind], field: value}
            raw = orjson.dumps(event)
            fast = typed_event(msgspec.Raw(raw), LIMITS)
            if fast is not None:
                fast_taken += 1
                assert_same_as_precise(fast, event, None, len(raw))
    assert fast_taken > 0


BROWSER_EVENT = {
    "type": "track",
    "event": "Product Added",
    "userId": None,
    "anonymousId": "5f2b7c1e-8a3d-4e6f-9b0a-1c2d3e4f5a6b",
    "messageId": "ajs-next-1f2e3d",
    "timestamp": "2026-01-15T10:20:30.123Z",
    "properties": {"product_id": "P-50732", "price": 89.5},
    "context": {"page": {"path": "/p", "url": "https://shop.example.com/p"}, "userAgent": "Mozilla/5.0"},
    "integrations": {},
    "_metadata": {"bundled": ["Segment.io"], "unbundled": []},
    "sentAt": "2026-01-15T10:20:31.000Z",
}
SERVER_EVENT = {  # segment-analytics-python
    "type": "identify",
    "userId": "u-1",
    "traits": {"plan": "pro"},
    "context": {"library": {"name": "analytics-python", "version": "2.3.2"}},
    "integrations": {},
    "messageId": "0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d",
    "timestamp": "2026-01-15T10:20:30.123456+00:00",
}


@pytest.mark.parametrize("event", [BROWSER_EVENT, SERVER_EVENT], ids=["analytics.js", "analytics-python"])
def test_what_real_senders_send_takes_the_fast_path(event: dict[str, Any]) -> None:
    body = orjson.dumps({"batch": [event] * 3, "sentAt": "2026-01-15T10:20:31Z", "writeKey": "hwpk_k"})
    read = read_body("batch", body, Limits(32 * 1024, 32))
    assert read.typed and read.write_key == "hwpk_k" and read.sent_at == "2026-01-15T10:20:31Z"
    assert all(isinstance(e, SegmentEvent) for e in read.events)
    single = read_body(str(event["type"]), orjson.dumps(event), Limits(32 * 1024, 32))
    assert single.typed


def test_a_batch_the_fast_path_cannot_read_is_parsed_for_the_precise_path() -> None:
    for body in (b'{"batch": "nope"}', b'{"batch": [], "sentAt": "yesterday"}', b'{"sentAt": 1}'):
        read = read_body("batch", body, LIMITS)
        assert not read.typed
        assert read.events == orjson.loads(body).get("batch")
    with pytest.raises(IngestError) as error:
        read_body("batch", b"{not json", LIMITS)
    assert (error.value.status, error.value.code) == (400, "invalid_json")
    with pytest.raises(IngestError):
        read_body("track", b"[1, 2]", LIMITS)


def test_batch_defaults_are_kept_raw_and_only_objects() -> None:
    body = b'{"batch": [], "context": {"library": {"name": "x"}}, "integrations": "all"}'
    read = read_body("batch", body, LIMITS)
    assert read.typed and list(read.defaults) == ["context"]
    assert bytes(read.defaults["context"]) == b'{"library": {"name": "x"}}'


def test_context_ip_is_removed_from_raw_context() -> None:
    assert orjson.loads(bytes(without_context_ip(msgspec.Raw(b'{"ip": "1.2.3.4", "locale": "de"}')))) == {
        "locale": "de"
    }
    untouched = msgspec.Raw(b'{"locale": "de"}')
    assert without_context_ip(untouched) is untouched
