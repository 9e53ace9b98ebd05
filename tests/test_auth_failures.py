"""Repeated authentication failures from one client are slowed down (429 with Retry-After) and logged
once per client and interval, never with the key — on the edge and on the control API; per-client
limits key an IPv6 client by its /64."""

from __future__ import annotations

import functools
import logging

import httpx
import pytest
from hw_testing import (
    ADMIN_TOKEN,
    ONE_EVENT_PER_IP_PER_SECOND,
    admin_headers,
    basic_auth,
    create_project,
    track_event,
    track_from,
)

from headwater.core.service.authfailures import AuthFailureLimits, AuthFailures
from headwater.core.service.clientnet import client_network
from headwater.edge.settings import EdgeSettings
from headwater.ops.runtime import Stack

WRONG_KEY = "wk_this-key-does-not-exist-0123456789"
WRONG_TOKEN = "not-the-admin-token-0123456789"


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_an_ipv6_client_is_keyed_by_its_64(address: str, key: str) -> None:
    assert client_network(address) == key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_beyond_the_burst_slow_the_client_down(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    failures = AuthFailures("write key", AuthFailureLimits(burst=5, per_second=0.5), clock)
    with caplog.at_level(logging.WARNING, logger="headwater.core.service.authfailures"):
        for _ in range(5):
            assert failures.retry_after("2001:db8::1") == 0
            failures.failed("2001:db8::1", "unknown_key")
    assert failures.retry_after("2001:db8::2") == pytest.approx(2.0)  # the same /64
    assert failures.retry_after("2001:db8:0:1::1") == 0  # another /64
    assert failures.retry_after(None) == 0
    clock.now += 2
    assert failures.retry_after("2001:db8::1") == 0  # one more try after the refill
    [line] = [r.getMessage() for r in caplog.records]  # one line for the interval
    assert "2001:db8::/64" in line and "unknown_key" in line


def test_one_log_line_per_client_and_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    failures = AuthFailures("admin token", AuthFailureLimits(log_interval_seconds=60), clock)
    with caplog.at_level(logging.WARNING, logger="headwater.core.service.authfailures"):
        for _ in range(10):
            failures.failed("198.51.100.1", "invalid_admin_token")
            failures.failed("198.51.100.2", "invalid_admin_token")
            clock.now += 1
        clock.now += 60
        failures.failed("198.51.100.1", "invalid_admin_token")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[2].startswith("10 failed admin token authentication(s) from 198.51.100.1")


def test_the_tracked_clients_are_bounded() -> None:
    failures = AuthFailures("write key", AuthFailureLimits(burst=1, max_clients=3))
    for n in range(10):
        failures.failed(f"192.0.2.{n}", "unknown_key")
    assert failures.retry_after("192.0.2.9") > 0
    assert failures.retry_after("192.0.2.0") == 0  # forgotten: starts afresh


@pytest.fixture
async def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    return await make_stack(edge=EdgeSettings(port=0, trusted_proxies=("127.0.0.1/32",)), control=True)


@pytest.mark.services
async def test_the_edge_slows_down_a_client_guessing_write_keys(
    stack: Stack, http: httpx.AsyncClient, project_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = await create_project(http, stack, project_id)
    guesser = {"X-Forwarded-For": "2001:db8:5::1"}

    async def post(key: str, headers: dict[str, str]) -> httpx.Response:
        return await http.post(
            f"{stack.edge_url}/v1/track", json=track_event(), headers={**basic_auth(key), **headers}
        )

    with caplog.at_level(logging.WARNING, logger="headwater.core.service.authfailures"):
        statuses = [(await post(WRONG_KEY, guesser)).status_code for _ in range(30)]
    assert statuses[:20] == [401] * 20
    assert set(statuses[20:]) == {429}
    refused = await post(keys["secret_key"], {"X-Forwarded-For": "2001:db8:5::2"})  # same /64
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_auth_failures"
    assert int(refused.headers["Retry-After"]) >= 1
    # Another client is served meanwhile.
    assert (await post(keys["secret_key"], {"X-Forwarded-For": "203.0.113.9"})).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "headwater.core.service.authfailures"]
    assert len(lines) == 1
    assert "2001:db8:5::/64" in lines[0] and "write key" in lines[0]
    assert WRONG_KEY not in caplog.text


@pytest.mark.services
async def test_the_control_api_slows_down_a_client_guessing_admin_tokens(
    stack: Stack, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{stack.control_url}/v1/projects"
    wrong = admin_headers(WRONG_TOKEN)
    with caplog.at_level(logging.WARNING, logger="headwater.core.service.authfailures"):
        statuses = [(await http.get(url, headers=wrong)).status_code for _ in range(25)]
    assert statuses[:20] == [403] * 20
    assert set(statuses[20:]) == {429}
    refused = await http.get(url, headers=admin_headers(ADMIN_TOKEN))  # the same address
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_auth_failures"
    assert int(refused.headers["Retry-After"]) >= 1
    lines = [r.getMessage() for r in caplog.records if r.name == "headwater.core.service.authfailures"]
    assert len(lines) == 1 and "admin token" in lines[0] and "127.0.0.1" in lines[0]
    assert WRONG_TOKEN not in caplog.text


@pytest.mark.services
async def test_the_per_ip_rate_limit_keys_an_ipv6_client_by_its_64(
    stack: Stack, http: httpx.AsyncClient, project_id: str
) -> None:
    keys = await create_project(http, stack, project_id, settings=ONE_EVENT_PER_IP_PER_SECOND)
    send = functools.partial(track_from, http, stack, keys["secret_key"])  # (ip) -> status
    # Rotating addresses inside one /64 does not escape the bucket.
    assert [await send(f"2001:db8:7::{n}") for n in range(1, 4)] == [200, 200, 429]
    assert await send("2001:db8:8::1") == 200  # another /64
