"""The anonymisation rules' fast paths give what the plain code gives: the detectors' digit count
in UTF-8 bytes, all of a rule's detectors in one `replace_all`, the search of an object's bytes
for the rules' keys, and rows.py's own look-ups of kept results (hypothesis against the
straightforward forms)."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from hypothesis import example, given
from hypothesis import strategies as st

from headwater.consumers.rows import _anonymised_event
from headwater.consumers.wire import WireEvent
from headwater.privacy.anonymise import Change, compile_rules
from headwater.privacy.detectors import (
    DETECTOR_ORDER,
    DETECTORS,
    _digit_count,
    replace_all,
    replace_matches,
    replacement_steps,
)
from headwater.privacy.rules import Rule

# Text in which the detectors find things: pieces of addresses, numbers, separators and any
# character (surrogates and non-ASCII digits among them).
_PIECES = st.sampled_from(
    [
        "user7@example.com",
        "a.b@x-y.org",
        "4111 1111 1111 1111",
        "4111-1111-1111-1112",
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "192.168.1.20",
        "1.2.3.4",
        "10.0.0.256",
        "2001:db8::1",
        "fe80::1:2:3",
        "+49 30 1234 5678",
        "(030) 1234 5678",
        "555-123-4567",
        "٣٤٥",  # Arabic-Indic digits: no ASCII digits
        " ",
        "-",
        ".",
        ":",
        "@",
        "0",
        "7",
    ]
)
_TEXT = st.lists(_PIECES | st.text(st.characters(blacklist_categories=()), max_size=3), max_size=12).map(
    "".join
)


@given(st.text(st.characters(blacklist_categories=())) | _TEXT)
def test_the_digit_count_is_the_ascii_digits_of_the_text(text: str) -> None:
    assert _digit_count(text) == sum(char in "0123456789" for char in text)


def _one_by_one(text: str, detectors: list[str], replace: Callable[[str, str], str]) -> str:
    """The detectors in turn, each its expression(s) after its own cheap test, as `replace_matches`
    did before `replace_all`."""
    for detector in detectors:
        parts = (DETECTORS["ip"], DETECTORS["ipv6"]) if detector == "ip" else (DETECTORS[detector],)
        for part in parts:
            if not part.maybe(text):
                continue

            def substitute(match: object, part: object = part, detector: str = detector) -> str:
                found = match.group(0)  # type: ignore[attr-defined]
                return replace(detector, found) if part.check(found) else found  # type: ignore[attr-defined]

            text = part.candidates.sub(substitute, text)
    return text


# What replaces a match: a placeholder, or text with digits and signs that later detectors may
# find again (as a `mask` or `hash` action's replacements can hold).
_REPLACES: list[Callable[[str, str], str]] = [
    lambda detector, _found: f"[{detector}]",
    lambda _detector, found: found[::-1],
    lambda _detector, found: "*" * (len(found) - 4) + found[-4:],
    lambda _detector, found: f"{len(found)}.{len(found)}.1.1 +1 555 123 4567",
]


@given(
    _TEXT,
    st.lists(st.sampled_from(DETECTOR_ORDER), unique=True).map(
        lambda ds: [d for d in DETECTOR_ORDER if d in ds]
    ),
    st.sampled_from(range(len(_REPLACES))),
)
@example("ip 1.2.3.4", ["card", "ip", "phone"], 3)  # the phone number appears with the ip's replacement
def test_replace_all_is_each_detector_in_turn(text: str, detectors: list[str], which: int) -> None:
    replace = _REPLACES[which]
    steps = replacement_steps((d, lambda found, d=d: replace(d, found)) for d in detectors)  # type: ignore[misc]
    assert replace_all(text, steps) == _one_by_one(text, detectors, replace)
    for detector in detectors:
        assert replace_matches(text, detector, lambda f, d=detector: replace(d, f)) == _one_by_one(  # type: ignore[misc]
            text, [detector], replace
        )


_KEYS = st.sampled_from(["email", "user", "url", "note", "a\\b", "é", '"q"', "*"])


@given(
    st.lists(st.lists(_KEYS, min_size=1, max_size=3), min_size=1, max_size=5),
    st.dictionaries(_KEYS | st.text(max_size=4), st.text(max_size=6) | st.integers(), max_size=5),
    st.binary(max_size=40),
)
def test_the_search_for_the_rules_keys_is_a_search_for_their_bytes(
    paths: list[list[str]], value: dict[str, object], noise: bytes
) -> None:
    rules = msgspec.convert(
        [
            {"path": ".".join(["properties", *(k.replace(".", "") for k in path)]), "action": "drop"}
            for path in paths
        ],
        tuple[Rule, ...],
    )
    compiled = compile_rules(rules, None)
    first = msgspec.json.encode(paths[0][0])
    for raw in (msgspec.json.encode(value), noise, msgspec.json.encode(value) + noise, first + noise):
        needles = [msgspec.json.encode(path[0]) for path in paths if path[0] != "*"]
        expected = len(needles) < len(paths) or any(n in raw for n in needles) or b"\\" in raw
        assert compiled._may_apply("properties", raw) == expected


_EVENT_RULES = msgspec.convert(
    [
        {"path": "userId", "action": "hash"},
        {"path": "anonymousId", "action": "mask", "keep_last": 2},
        {"path": "properties.email", "action": "hash"},
        {"path": "properties.note", "action": "truncate", "length": 3},
        {"path": "traits.*", "action": "redact", "detectors": ["email", "phone", "card", "ip"]},
    ],
    tuple[Rule, ...],
)
_IDS = (
    st.none()
    | st.sampled_from(["u1", "u2", "user7@example.com", ""])
    | st.integers(0, 3)
    | st.text(max_size=4)
)
_OBJECTS = st.none() | st.dictionaries(
    st.sampled_from(["email", "note", "plan", "x"]),
    st.sampled_from(["a@b.co", "free", "+49 30 1234 5678", "1.2.3.4"])
    | st.integers(0, 3)
    | st.text(max_size=4),
    max_size=3,
)


@given(st.lists(st.tuples(_IDS, _IDS, _OBJECTS, _OBJECTS), min_size=1, max_size=8))
def test_an_events_kept_results_are_what_the_rules_give(events: list[tuple[object, ...]]) -> None:
    rules = compile_rules(_EVENT_RULES, b"k" * 32)
    for _ in range(2):  # the second time from the results kept the first
        for user_id, anonymous_id, properties, traits in events:
            fields: dict[str, object] = {"userId": user_id, "anonymousId": anonymous_id}
            fields |= {k: v for k, v in (("properties", properties), ("traits", traits)) if v is not None}
            event = msgspec.json.decode(msgspec.json.encode(fields), type=WireEvent)
            noted: list[Change] = []  # (noting changes takes the path that keeps nothing)
            assert _anonymised_event(event, rules, None) == _anonymised_event(event, rules, noted)
