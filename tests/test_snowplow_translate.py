"""The Snowplow tracker protocol's translation into Segment events (edge/snowplow.py), without services."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.consumers.enrich.timestamps import skew_corrected
from headwater.core.wire.timestamps import utc_timestamp
from headwater.edge.errors import IngestError
from headwater.edge.snowplow import PAYLOAD_DATA_SCHEMAS, read_pixel, read_tp2, translate
from headwater.edge.validation import validate_event
from headwater.edge.wire import Limits, SegmentEvent

BUTTON = "iglu:com.acme/button_click/jsonschema/1-0-2"
UNSTRUCT = "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0"
CONTEXTS = "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1"


def base(**params: str) -> dict[str, str]:
    return {"tv": "py-1.1.0", "p": "srv", "tna": "ns", "aid": "app", "duid": "device-1", **params}


def b64url(value: Any, padded: bool) -> str:
    text = base64.urlsafe_b64encode(json.dumps(value).encode()).decode()
    return text if padded else text.rstrip("=")


LIMITS = Limits(max_event_bytes=32_768, max_nesting_depth=8)


def translated(params: dict[str, str], limits: Limits = LIMITS) -> dict[str, Any]:
    """The event as the envelope will carry it."""
    event = translate(params, limits)
    assert not isinstance(event, IngestError), event.to_dict()
    parsed: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(event))
    return parsed


def refused(params: dict[str, str], limits: Limits = LIMITS) -> IngestError:
    event = translate(params, limits)
    assert isinstance(event, IngestError), event
    return event


def test_page_view_maps_onto_a_page_call_and_its_context() -> None:
    event = translated(
        base(
            e="pv",
            eid="e-1",
            uid="user-1",
            sid="session-9",
            vid="3",
            url="https://shop.example/p?utm_source=news",
            page="Pricing",
            refr="https://ref.example/",
            ua="Mozilla/5.0",
            lang="de-DE",
            tz="Europe/Berlin",
            res="1920x1080",
            vp="800x600",
        )
    )
    page = {
        "url": "https://shop.example/p?utm_source=news",
        "title": "Pricing",
        "referrer": "https://ref.example/",
    }
    assert event["type"] == "page"
    assert (event["messageId"], event["userId"], event["anonymousId"]) == ("e-1", "user-1", "device-1")
    assert event["properties"] == page
    context = event["context"]
    assert context["page"] == page
    assert (context["sessionId"], context["sessionIndex"]) == ("session-9", 3)
    assert (context["userAgent"], context["locale"], context["timezone"]) == (
        "Mozilla/5.0",
        "de-DE",
        "Europe/Berlin",
    )
    assert context["screen"] == {"width": 1920, "height": 1080}
    assert context["library"] == {"name": "snowplow", "version": "py-1.1.0"}
    # What has no Segment place is kept; the aid (possibly a key) never is.
    assert context["snowplow"] == {"tv": "py-1.1.0", "p": "srv", "tna": "ns", "vp": "800x600"}


def test_structured_event_is_a_track_named_after_its_action() -> None:
    event = translated(
        base(e="se", se_ca="shop", se_ac="add-to-basket", se_la="sku-1", se_pr="red", se_va="2.5")
    )
    assert (event["type"], event["event"]) == ("track", "add-to-basket")
    assert event["properties"] == {
        "category": "shop",
        "action": "add-to-basket",
        "label": "sku-1",
        "property": "red",
        "value": 2.5,
    }
    assert refused(base(e="se", se_ca="shop")).field == "se_ac"
    assert refused(base(e="se", se_ac="x", se_ca="shop", se_va="lots")).field == "se_va"


@pytest.mark.parametrize("form", ["ue_pr", "ue_px padded", "ue_px unpadded"])
def test_self_describing_event_in_every_encoding(form: str) -> None:
    payload = {"schema": UNSTRUCT, "data": {"schema": BUTTON, "data": {"id": "buy", "n": 2}}}
    contexts = {
        "schema": CONTEXTS,
        "data": [{"schema": "iglu:com.acme/user/jsonschema/1-0-0", "data": {"tier": 1}}],
    }
    if form == "ue_pr":
        params = base(e="ue", ue_pr=json.dumps(payload), co=json.dumps(contexts))
    else:
        padded = form.endswith(" padded")
        params = base(e="ue", ue_px=b64url(payload, padded), cx=b64url(contexts, padded))
    event = translated(params)
    assert (event["type"], event["event"]) == ("track", "com.acme/button_click")
    assert event["properties"] == {"id": "buy", "n": 2}
    assert event["context"]["snowplow_event_schema"] == BUTTON
    assert event["context"]["snowplow_contexts"] == contexts["data"]


def test_page_ping_is_a_track_with_its_scroll_offsets() -> None:
    event = translated(
        base(e="pp", url="https://shop.example/", pp_mix="0", pp_max="10", pp_miy="5", pp_may="900")
    )
    assert (event["type"], event["event"]) == ("track", "Page Ping")
    assert event["properties"] == {
        "url": "https://shop.example/",
        "min_x": 0,
        "max_x": 10,
        "min_y": 5,
        "max_y": 900,
    }


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"e": "tr"}, "unsupported_event", "e"),
        ({"e": None}, "missing_field", "e"),
        ({"e": "ue", "ue_px": "!!!"}, "invalid_field", "ue_px"),
        ({"e": "ue", "ue_pr": "{not json"}, "invalid_field", "ue_pr"),
        ({"e": "ue", "ue_pr": '{"data": {"schema": "x", "data": {}}}'}, "invalid_field", "ue_pr"),
        ({"e": "ue"}, "missing_field", "ue_pr"),
        ({"e": "pv", "cx": b64url({"data": "no list"}, True)}, "invalid_field", "cx"),
        ({"e": "pv", "dtm": "yesterday"}, "invalid_timestamp", "dtm"),
        ({"e": "pv", "eid": "x" * 300}, "invalid_field", "eid"),
        ({"e": "pv", "duid": None}, "missing_field", "duid"),
        ({"e": "pp", "pp_max": "far"}, "invalid_field", "pp_max"),
    ],
)
def test_an_event_that_cannot_be_translated_is_refused_with_its_field(
    params: dict[str, str | None], code: str, field: str
) -> None:
    event = {k: v for k, v in {**base(), **params}.items() if v is not None}
    error = refused(event)
    assert (error.status, error.code, error.field) == (400, code, field)


RECEIVED = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def snowplow_derived(dtm: int | None, stm: int | None, ttm: int | None) -> datetime:
    """Snowplow enrich's derived_tstamp, as the enrich computes it (EventEnrichments.getDerivedTimestamp)."""
    if ttm is not None:
        return datetime.fromtimestamp(ttm / 1000, UTC)
    if dtm is not None and stm is not None and dtm < stm:
        return RECEIVED - timedelta(milliseconds=stm - dtm)
    return RECEIVED


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.mark.parametrize(
    ("dtm", "stm", "ttm"),
    [
        (ms(RECEIVED) - 3_600_000 - 5_000, ms(RECEIVED) - 3_600_000, None),  # clock an hour behind
        (ms(RECEIVED) + 7_200_123, ms(RECEIVED) + 7_200_456, None),  # two hours ahead
        (ms(RECEIVED) - 1_000, None, None),  # no send time: the collector's
        (ms(RECEIVED) + 900, ms(RECEIVED), None),  # stm in whole seconds, after dtm: the collector's
        (None, ms(RECEIVED), None),  # no device time
        (ms(RECEIVED) - 9_000, ms(RECEIVED) - 1_000, ms(RECEIVED) - 86_400_000),  # ttm wins, as sent
    ],
)
def test_event_time_is_snowplows_derived_timestamp(dtm: int | None, stm: int | None, ttm: int | None) -> None:
    """The edge's mapping onto timestamp/sentAt, corrected by the consumers' Segment rule, gives
    the time Snowplow's enrich derives."""
    params = base(e="pv")
    for name, value in (("dtm", dtm), ("stm", stm), ("ttm", ttm)):
        if value is not None:
            params[name] = str(value)
    event = translated(params)
    happened = utc_timestamp(event.get("timestamp"))
    sent = utc_timestamp(event.get("sentAt"))
    assert skew_corrected(happened, sent, RECEIVED) == snowplow_derived(dtm, stm, ttm)


@pytest.mark.parametrize("schema", sorted(PAYLOAD_DATA_SCHEMAS))
def test_every_payload_data_revision_is_read(schema: str) -> None:
    body = json.dumps({"schema": schema, "data": [base(e="pv"), base(e="pp")]}).encode()
    assert [e["e"] for e in read_tp2(body, 10) if isinstance(e, dict)] == ["pv", "pp"]


def test_tp2_refusals() -> None:
    def code(body: bytes, max_events: int = 10) -> tuple[str, str | None]:
        with pytest.raises(IngestError) as caught:
            read_tp2(body, max_events)
        return caught.value.code, caught.value.field

    schema = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
    assert code(b"{") == ("invalid_json", None)
    assert code(b'{"data": []}') == ("invalid_payload", None)
    later = schema.replace("1-0-4", "1-0-5")
    assert code(json.dumps({"schema": later, "data": [base(e="pv")]}).encode()) == (
        "unsupported_schema",
        "schema",
    )
    assert code(json.dumps({"schema": schema, "data": []}).encode()) == ("invalid_batch", "data")
    many = json.dumps({"schema": schema, "data": [base(e="pv")] * 3}).encode()
    assert code(many, max_events=2) == ("too_many_events", "data")
    # One event with a non-string value is refused in its place; the others are read.
    mixed = read_tp2(
        json.dumps({"schema": schema, "data": [base(e="pv"), {**base(e="pv"), "vid": 3}]}).encode(), 10
    )
    assert isinstance(mixed[0], dict)
    assert isinstance(mixed[1], IngestError) and mixed[1].field == "vid"


def test_pixel_reads_the_query_string() -> None:
    assert read_pixel(b"e=pv&aid=app&url=https%3A%2F%2Fa.example%2F&e=se") == {
        "e": "pv",
        "aid": "app",
        "url": "https://a.example/",
    }


def test_translated_events_take_the_fast_path_and_its_limits() -> None:
    """A translated event is the typed event a Segment one would be; one too large or too deep is
    refused with the codes Segment events get."""
    assert isinstance(translate(base(e="pv", url="https://a.example/"), LIMITS), SegmentEvent)
    large = refused(base(e="pv", url="https://a.example/" + "x" * 40_000))
    assert (large.status, large.code) == (413, "event_too_large")
    deep: Any = {"leaf": 1}
    for _ in range(10):
        deep = {"in": deep}
    payload = {"schema": UNSTRUCT, "data": {"schema": BUTTON, "data": deep}}
    too_deep = refused(base(e="ue", ue_pr=json.dumps(payload)))
    assert (too_deep.status, too_deep.code) == (400, "too_deep")
    # Shallow enough for the precise rules (brackets in strings only make the fast path unsure).
    brackets = {"schema": UNSTRUCT, "data": {"schema": BUTTON, "data": {"text": "[[[[{{{{[[[["}}}
    assert translated(base(e="ue", ue_pr=json.dumps(brackets)))["properties"] == {"text": "[[[[{{{{[[[["}


def _nested(depth: int) -> Any:
    value: Any = {"leaf": "[{"}
    for level in range(depth):
        value = {"in": value} if level % 2 else [value]
    return value


def _digits() -> st.SearchStrategy[str]:
    """Epoch milliseconds as trackers send them, and the edges of what _iso_ms reads."""
    return st.one_of(
        st.integers(0, 253_402_300_799_999).map(str),
        st.sampled_from(
            ["", "0", "007", "253402300800000", "-5", "1e3", "\uff11\uff12\uff13", "99999999999999999"]
        ),
    )


def _unstruct_event(data: dict[str, Any], base64_encoded: bool) -> str:
    envelope = {"schema": UNSTRUCT, "data": data}
    return b64url(envelope, False) if base64_encoded else json.dumps(envelope)


def _json_param(base64_encoded: bool) -> st.SearchStrategy[str]:
    """ue_pr (plain) or ue_px (base64url) values: events nesting 0-10 levels, and junk."""
    inner = st.builds(
        lambda schema, depth: {"schema": schema, "data": {"v": _nested(depth)}},
        st.sampled_from([BUTTON, "iglu:/x/jsonschema/1-0-0", "iglu: /x/jsonschema/1-0-0", "nope"]),
        st.integers(0, 10),
    )
    wrapped = inner.map(lambda data: _unstruct_event(data, base64_encoded))
    return st.one_of(wrapped, st.text(max_size=5))


def _contexts() -> st.SearchStrategy[str]:
    return st.integers(0, 10).map(lambda depth: json.dumps({"schema": CONTEXTS, "data": [_nested(depth)]}))


_ODD_TEXT = st.one_of(st.text(max_size=6), st.sampled_from(["", " ", "x" * 255, "x" * 256, "x" * 1025]))
# Mostly what a tracker sends; now and then what no tracker should.
_TEXT = st.one_of(st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8), _ODD_TEXT)
_NUMBER = st.one_of(st.integers(-5, 10**19).map(str), st.integers(0, 100).map(str), _ODD_TEXT)
# The fields each type of event needs, present but for ones of the `tx` type (refused).
_NEEDED = {
    "pv": {},
    "pp": {},
    "se": {"se_ca": _TEXT, "se_ac": _TEXT},
    "ue": {"ue_pr": _json_param(False)},
    "tx": {},
}
SNOWPLOW_EVENTS = st.sampled_from(sorted(_NEEDED)).flatmap(
    lambda kind: st.fixed_dictionaries(
        {"e": st.just(kind), "duid": _TEXT, **_NEEDED[kind]},
        optional={
            "eid": _TEXT, "uid": _TEXT, "nuid": _TEXT, "tnuid": _TEXT, "sid": _TEXT, "vid": _NUMBER,
            "dtm": _digits(), "stm": _digits(), "ttm": _digits(), "url": _TEXT, "page": _TEXT,
            "refr": _TEXT, "ua": _TEXT, "res": _TEXT, "se_la": _TEXT, "pp_mix": _NUMBER,
            "se_va": st.one_of(st.floats().map(str), _TEXT), "ue_px": _json_param(True),
            "co": _contexts(), "tv": _TEXT, "tna": _TEXT,
        },
    )
)  # fmt: skip


def test_a_translated_event_the_fast_path_takes_passes_the_precise_rules_unchanged() -> None:
    """What translate() hands on as a typed event (wire.accept_translated: only the objects' depth
    judged) is what validation.py accepts and leaves as it is."""
    fast = 0

    @settings(max_examples=1500, deadline=None)
    @given(sp=SNOWPLOW_EVENTS, depth=st.integers(3, 12))
    def check(sp: dict[str, str], depth: int) -> None:
        nonlocal fast
        limits = Limits(max_event_bytes=2_048, max_nesting_depth=depth)
        event = translate(sp, limits)
        if isinstance(event, IngestError):
            hypothesis.event(f"refused: {event.code}")
            return
        hypothesis.event("fast path" if isinstance(event, SegmentEvent) else "precise path")
        if not isinstance(event, SegmentEvent):
            return
        fast += 1
        encoded = msgspec.json.encode(event)
        assert len(encoded) <= limits.max_event_bytes
        sent = json.loads(encoded)
        assert isinstance(sent.get("messageId"), str)
        precise = validate_event(copy.deepcopy(sent), None, limits.max_event_bytes, len(encoded), depth)
        assert precise == sent

    check()
    assert fast >= 100, f"only {fast} events took the fast path: the property says too little"


def test_an_event_without_an_eid_is_judged_with_the_message_id_it_gets() -> None:
    """Without `eid` the translation gives the event a message id; an event just under the limit
    without it must not be handed on over the limit with it (found by the property test above)."""
    limits = Limits(max_event_bytes=1_024, max_nesting_depth=8)
    refused = handed_on = 0
    for padding in range(400, 800, 3):
        event = translate(base(e="se", se_ca="c", se_ac="a", tna="x" * padding), limits)
        if isinstance(event, IngestError):
            assert event.code == "event_too_large"
            refused += 1
            continue
        handed_on += 1
        assert isinstance(event, SegmentEvent)
        assert len(msgspec.json.encode(event)) <= limits.max_event_bytes
    assert refused and handed_on  # the sizes cross the limit
