"""Built-in detectors of personal data in text: e-mail addresses, phone numbers, payment card
numbers (Luhn-checked), IBANs (mod-97-checked) and IP addresses (v4 and v6, checked by parsing).

Each detector is a candidate regular expression (Python's `re`, ASCII digits and letters: fixed
patterns written without nested quantifiers, so their time is linear in the text) plus a check of
the candidate, and a cheap test on the text that skips the expression when no match is possible
(no `@`, too few digits).
`replace_matches(text, detector, replace)` calls `replace` on each checked match.

These are heuristics tuned to miss little: a phone detector cannot tell a phone number from every
other run of digits, so it wants either a leading `+` or separators between groups (docs/privacy.md).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Replace = Callable[[str], str]


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check (payment card numbers)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """Whether `text` (spaces allowed) is an IBAN whose check digits are right (ISO 13616 mod 97)."""
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum() or not compact.isascii():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_DIGITS = b"0123456789"


def _digit_count(text: str) -> int:
    """ASCII digits in `text` (what the detectors' expressions match as digits). Counted in its
    UTF-8 bytes, where every other character is bytes of 0x80 and up: `bytes.translate` deletes
    in C (~0.25 µs for an e-mail address) where `str.translate` looks each character up in a
    table (~1 µs), and the digit-based detectors ask once per value each."""
    data = text.encode("utf-8", "surrogatepass")
    return len(data) - len(data.translate(None, _DIGITS))


@dataclass(frozen=True, slots=True)
class _Detector:
    candidates: re.Pattern[str]
    check: Callable[[str], bool]
    maybe: Callable[[str], bool]  # False: the text cannot hold a match (skips the expression)
    placeholder: str
    # > 0: `maybe` is "the text holds at least this many digits", which `replace_all` asks of a
    # count it makes once per text for every detector.
    min_digits: int = 0


_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+", re.ASCII)
# 13 to 19 digits, optionally grouped by single spaces or dashes, not inside a longer number.
_CARD = re.compile(r"(?<![\d-])\d(?:[ \-]?\d){12,18}(?![\d-])", re.ASCII)
# Two capital letters, two check digits, then groups of four capitals or digits (single spaces
# between groups allowed, as IBANs are printed) and a last shorter group: 15 to 34 characters.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", re.ASCII)
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])", re.ASCII)
_IPV6 = re.compile(
    r"(?<![0-9A-Fa-f:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?(?![0-9A-Fa-f:.])",
    re.ASCII,
)
# International (`+` and 7 to 15 digits, separators allowed) or national with separators between
# at least three groups (`(030) 1234 5678`, `555-123-4567`); plain runs of digits are not phones.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d(?:[ .\-]?\(?\d\)?){6,16}"
    r"|\(?\d{2,5}\)?[ .\-]\d{2,5}[ .\-]\d{3,5}(?:[ .\-]\d{2,5})?)(?![\w])",
    re.ASCII,
)


def _card_check(candidate: str) -> bool:
    digits = candidate.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _phone_check(candidate: str) -> bool:
    return 7 <= _digit_count(candidate) <= 15


def _has_digits(count: int) -> Callable[[str], bool]:
    def maybe(text: str) -> bool:
        return _digit_count(text) >= count

    return maybe


DETECTORS: dict[str, _Detector] = {
    "email": _Detector(_EMAIL, lambda _c: True, lambda t: "@" in t, "[email]"),
    "card": _Detector(_CARD, _card_check, _has_digits(13), "[card]", min_digits=13),
    "iban": _Detector(_IBAN, iban_valid, _has_digits(2), "[iban]", min_digits=2),
    "ip": _Detector(_IPV4, _is_ip, lambda t: "." in t, "[ip]"),
    "ipv6": _Detector(_IPV6, _is_ip, lambda t: t.count(":") >= 2, "[ip]"),
    "phone": _Detector(_PHONE, _phone_check, _has_digits(7), "[phone]", min_digits=7),
}
# The order detectors run in within one rule: the stricter (checked) ones first, so a card number
# is `[card]` rather than taken for a phone number.
DETECTOR_ORDER: tuple[str, ...] = ("email", "card", "iban", "ip", "phone")


# Every detector's match holds one of these: an e-mail address its `@`, an IPv6 address its `:`, the
# others (card, IBAN, phone, IPv4) ASCII digits.
_SIGN_OF_ANY = re.compile(r"[0-9@:]", re.ASCII)


def may_hold_any(text: str) -> bool:
    """False when no detector can match in `text` (most short values: a plan, a name, a flag)."""
    return _SIGN_OF_ANY.search(text) is not None


def placeholder_of(detector: str) -> str:
    return DETECTORS[detector].placeholder


# A detector's expression and what replaces its checked matches; "ip" is two (IPv4, then IPv6).
Step = tuple[_Detector, Replace]


def replacement_steps(detectors: Iterable[tuple[str, Replace]]) -> tuple[Step, ...]:
    """The steps of `replace_all` for (detector, replace) pairs, in their order."""
    steps: list[Step] = []
    for detector, replace in detectors:
        parts = (DETECTORS["ip"], DETECTORS["ipv6"]) if detector == "ip" else (DETECTORS[detector],)
        steps.extend((part, replace) for part in parts)
    return tuple(steps)


def replace_all(text: str, steps: tuple[Step, ...]) -> str:
    """`text` after each step in turn, each checked match of its detector replaced by its
    `replace(match)`; the digits are counted once for all the digit-based detectors (again only
    after a step changed the text)."""
    digits = -1
    for part, replace in steps:
        if part.min_digits:
            if digits < 0:
                digits = _digit_count(text)
            if digits < part.min_digits:
                continue
        elif not part.maybe(text):
            continue

        def substitute(
            match: re.Match[str], check: Callable[[str], bool] = part.check, replace: Replace = replace
        ) -> str:
            found = match.group(0)
            return replace(found) if check(found) else found

        new = part.candidates.sub(substitute, text)
        if new != text:
            text, digits = new, -1
    return text


def replace_matches(text: str, detector: str, replace: Replace) -> str:
    """`text` with each checked match of `detector` replaced by `replace(match)`."""
    return replace_all(text, replacement_steps(((detector, replace),)))


def contains(text: str, detector: str) -> bool:
    """Whether `text` holds a checked match of `detector`."""
    found = False

    def note(match: str) -> str:
        nonlocal found
        found = True
        return match

    replace_matches(text, detector, note)
    return found
