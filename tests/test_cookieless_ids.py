"""The cookieless visitor id and its helpers, as pure functions (privacy/cookieless.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from headwater.core.projects.settings import ProjectSettings
from headwater.core.service.errors import APIError
from headwater.privacy.cookieless import (
    SALT_BYTES,
    before_midnight,
    canonical_address,
    network_of,
    site_host,
    utc_day,
    visitor_id,
)

SALT = bytes(range(SALT_BYTES))
OTHER_SALT = bytes(reversed(range(SALT_BYTES)))
INPUTS = ("shop", "203.0.113.77", "Mozilla/5.0", "shop.example")


def test_the_id_is_a_keyed_hash_of_every_input() -> None:
    base = visitor_id(SALT, *INPUTS)
    assert base == visitor_id(SALT, *INPUTS)
    assert base.startswith("cl_") and len(base) == 3 + 32
    changed = {
        visitor_id(OTHER_SALT, *INPUTS),
        visitor_id(SALT, "shop2", *INPUTS[1:]),
        visitor_id(SALT, "shop", "203.0.113.78", *INPUTS[2:]),
        visitor_id(SALT, "shop", "203.0.113.77", "Mozilla/5.1", "shop.example"),
        visitor_id(SALT, "shop", "203.0.113.77", "Mozilla/5.0", "blog.example"),
        # Length-prefixed inputs: moving text from one input to the next is another visitor.
        visitor_id(SALT, "shop", "203.0.113.77", "Mozilla/5.0shop", ".example"),
    }
    assert base not in changed and len(changed) == 6
    assert visitor_id(SALT, "shop", "::ffff:203.0.113.77", *INPUTS[2:]) == base
    assert visitor_id(SALT, "shop", None, None, "") == visitor_id(SALT, "shop", "", "", "")
    with pytest.raises(ValueError, match="32 bytes"):
        visitor_id(b"short", *INPUTS)


def test_addresses_are_reduced_to_their_network() -> None:
    assert network_of("203.0.113.77") == "203.0.113.0"
    assert network_of("::ffff:203.0.113.77") == "203.0.113.0"
    assert network_of("2001:db8:85a3:1:2:3:4:5") == "2001:db8:85a3::"
    assert network_of("[2001:db8::1]") == "2001:db8::"
    assert network_of("not an address") is None
    assert network_of(None) is None and network_of("") is None
    assert canonical_address(" [2001:DB8::1] ") == "2001:db8::1"
    assert canonical_address("garbage") == "garbage"


def test_the_site_is_the_origins_host_else_the_pages() -> None:
    assert site_host("https://Shop.Example:8443") == "shop.example"
    assert site_host(None, "https://blog.example/p?q=1") == "blog.example"
    assert site_host("null", "https://blog.example/") == "blog.example"  # a sandboxed page
    assert site_host(None, 42) == "" and site_host(None, "http://[bad") == ""


def test_days_and_the_stretch_before_midnight() -> None:
    evening = datetime(2026, 12, 6, 23, 40, tzinfo=UTC)
    assert utc_day(evening) == date(2026, 12, 6)
    assert utc_day(datetime(2026, 12, 7, 0, 30, tzinfo=UTC) - timedelta(hours=1)) == date(2026, 12, 6)
    assert before_midnight(evening, 1800) and not before_midnight(evening, 600)
    assert not before_midnight(datetime(2026, 12, 7, 0, 0, tzinfo=UTC), 1800)


def test_the_setting() -> None:
    assert ProjectSettings().cookieless.mode == "off"
    settings = ProjectSettings.from_dict({"cookieless": {"mode": "missing"}})
    assert settings.to_dict()["cookieless"] == {"mode": "missing"}
    assert ProjectSettings().merged({"cookieless": {"mode": "always"}}).cookieless.mode == "always"
    with pytest.raises(APIError) as refused:
        ProjectSettings.from_dict({"cookieless": {"mode": "on"}})
    assert refused.value.field == "settings.cookieless.mode"
    # Independent of the IP rule: under the mode the edge hands the consumers networks only.
    kept = ProjectSettings.from_dict({"cookieless": {"mode": "always"}, "anonymisation": {"ip": "keep"}})
    assert kept.anonymisation.ip == "keep"
