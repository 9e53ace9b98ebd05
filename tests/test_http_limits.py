"""What an HTTP client may make the edge and control servers hold: header size and count, a head or a
body sent too slowly, malformed requests — through raw sockets against the real servers, with short
limits so the tests run fast, checking that other requests are served meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import ssl
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from hw_testing import ADMIN_TOKEN, BIN, cli_env, self_signed

from headwater.edge.settings import EdgeSettings
from headwater.ops.httplimits import HTTPLimits
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services

LIMITS = HTTPLimits(
    max_header_bytes=4096, max_headers=20, header_timeout_seconds=0.6, body_timeout_seconds=0.6
)


@pytest.fixture
async def stack(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    return await make_stack(edge=True, control=True, http=LIMITS)


async def connect(url: str | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert url is not None
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port)


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, orjson.loads(body) if body else None


async def answer(reader: asyncio.StreamReader, within: float = 5) -> tuple[int, dict[str, str], Any]:
    """Read until the server closes the connection; fails if it does not within `within` seconds."""
    return parse(await asyncio.wait_for(reader.read(), within))


async def send_slowly(writer: asyncio.StreamWriter, data: bytes, chunk: int = 64 * 1024) -> None:
    """Send `data`, stopping quietly once the server has closed the connection."""
    try:
        for start in range(0, len(data), chunk):
            writer.write(data[start : start + chunk])
            await writer.drain()
    except ConnectionError:
        pass


async def served_meanwhile(http: httpx.AsyncClient, stack: Stack) -> float:
    """Seconds the edge took to answer an ordinary request."""
    started = time.monotonic()
    response = await http.get(f"{stack.edge_url}/healthz")
    assert response.status_code == 200
    return time.monotonic() - started


@pytest.mark.parametrize("role", ["edge", "control"])
async def test_a_huge_header_is_refused_with_431_in_json(
    stack: Stack, http: httpx.AsyncClient, role: str
) -> None:
    reader, writer = await connect(stack.edge_url if role == "edge" else stack.control_url)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (16 << 20) + b"\r\n\r\n"
    sending = asyncio.create_task(send_slowly(writer, head))
    status, headers, body = await answer(reader)
    await sending
    writer.close()
    assert status == 431
    assert headers["content-type"] == "application/json"
    assert body["code"] == "headers_too_large"
    assert await served_meanwhile(http, stack) < 1


async def test_a_head_just_over_the_limit_in_one_piece_is_refused(stack: Stack) -> None:
    reader, writer = await connect(stack.edge_url)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4200 + b"\r\n\r\n")
    status, _, body = await answer(reader)
    writer.close()
    assert (status, body["code"]) == (431, "headers_too_large")


async def test_too_many_header_fields_are_refused_with_431(stack: Stack) -> None:
    reader, writer = await connect(stack.control_url)
    fields = b"".join(b"X-F%d: 1\r\n" % i for i in range(30))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    status, _, body = await answer(reader)
    writer.close()
    assert (status, body["code"]) == (431, "too_many_headers")


async def test_ordinary_headers_within_the_limits_are_served(stack: Stack) -> None:
    reader, writer = await connect(stack.edge_url)
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 100) for i in range(15))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields + b"\r\n")
    status, _, body = await answer(reader)
    writer.close()
    assert (status, body) == (200, {"status": "ok"})


@pytest.mark.parametrize("role", ["edge", "control"])
async def test_slowloris_connections_are_closed_and_others_served(
    stack: Stack, http: httpx.AsyncClient, role: str
) -> None:
    url = stack.edge_url if role == "edge" else stack.control_url
    connections = [await connect(url) for _ in range(50)]
    for _, writer in connections:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    for _ in range(3):  # one more header line now and then, never the end of the head
        await asyncio.sleep(0.3)
        assert await served_meanwhile(http, stack) < 1
        for _, writer in connections:
            writer.write(b"X-Slow: 1\r\n")
    for reader, writer in connections:
        status, _, body = await answer(reader, within=3)
        writer.close()
        assert (status, body["code"]) == (408, "header_timeout")
    assert time.monotonic() - started < 3


async def test_a_connection_that_sends_nothing_is_closed(stack: Stack) -> None:
    reader, writer = await connect(stack.edge_url)
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed without an answer
    writer.close()


async def test_an_idle_keep_alive_connection_that_starts_a_slow_head_is_closed(stack: Stack) -> None:
    reader, writer = await connect(stack.edge_url)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status_line = await asyncio.wait_for(reader.readline(), 3)
    assert b" 200 " in status_line
    await asyncio.wait_for(reader.readuntil(b'"ok"}'), 3)
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # the next request's head, never finished
    status, _, body = await answer(reader)
    writer.close()
    assert (status, body["code"]) == (408, "header_timeout")


@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
async def test_a_body_shorter_than_its_content_length_gets_408(
    stack: Stack, http: httpx.AsyncClient, path: str
) -> None:
    reader, writer = await connect(stack.edge_url)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        'Content-Length: 5000\r\n\r\n{"event":'.encode()
    )
    started = time.monotonic()
    await asyncio.sleep(0.2)
    assert await served_meanwhile(http, stack) < 1
    status, _, body = await answer(reader)
    writer.close()
    assert (status, body["code"]) == (408, "body_timeout")
    assert time.monotonic() - started < 3


async def test_a_body_trickled_byte_by_byte_is_cut_off(stack: Stack) -> None:
    reader, writer = await connect(stack.control_url)
    writer.write(
        b"POST /v1/projects HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        b"Authorization: Bearer %s\r\n\r\n" % ADMIN_TOKEN.encode()
    )
    closed = asyncio.create_task(reader.read())
    for _ in range(20):  # a byte every 0.1 s: each read is quick, the whole body is not
        if closed.done():
            break
        writer.write(b" ")
        await asyncio.sleep(0.1)
    status, _, body = parse(await asyncio.wait_for(closed, 3))
    writer.close()
    assert (status, body["code"]) == (408, "body_timeout")


@pytest.mark.parametrize("role", ["edge", "control"])
async def test_a_malformed_request_is_answered_in_json(stack: Stack, role: str) -> None:
    reader, writer = await connect(stack.edge_url if role == "edge" else stack.control_url)
    writer.write(b"GET /healthz HTTP/1.1\r\nBad Header Name: x\r\n\r\n")
    status, headers, body = await answer(reader)
    writer.close()
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert body["code"] == "malformed_request"


async def test_a_request_in_time_is_served_after_the_deadlines(stack: Stack) -> None:
    """A keep-alive connection serves several requests, each within the limits, longer in total
    than the head and body deadlines."""
    reader, writer = await connect(stack.edge_url)
    for _ in range(3):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in await asyncio.wait_for(reader.readline(), 3)
        await asyncio.wait_for(reader.readuntil(b'"ok"}'), 3)
        await asyncio.sleep(0.4)
    writer.close()


def test_limits_below_sense_are_refused() -> None:
    with pytest.raises(ValueError, match="header limits"):
        HTTPLimits(max_header_bytes=100)
    with pytest.raises(ValueError, match="timeouts must be positive"):
        HTTPLimits(body_timeout_seconds=0)


async def test_serve_edge_takes_the_limits_from_its_flags(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    """`headwater serve edge` in its own process, with the limits set by flags."""
    process = subprocess.Popen(  # noqa: ASYNC220 - started once; its output is read in a thread
        [
            str(BIN / "headwater"),
            "serve",
            "edge",
            "--port",
            "0",
            "--nats-url",
            nats_server.url,
            "--spool-dir",
            str(tmp_path / "spool"),
            "--max-header-bytes",
            "2048",
            "--header-timeout",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cli_env(),
    )
    try:
        assert process.stdout is not None
        line = await asyncio.to_thread(process.stdout.readline)
        match = re.search(r"running on (http://\S+)", line)
        assert match, f"unexpected first line from serve edge: {line!r}"
        reader, writer = await connect(match.group(1))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n")
        assert (await answer(reader))[0] == 431
        writer.close()
        reader, writer = await connect(match.group(1))
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        assert (await answer(reader))[0] == 408
        assert time.monotonic() - started < 2
        writer.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0


# -- HTTPS: hypercorn's own limits, and the edge's body deadline -------------------------------------


@pytest.fixture
async def tls_edge(make_stack, tmp_path: Path) -> tuple[Stack, ssl.SSLContext]:  # type: ignore[no-untyped-def]
    certificate = self_signed(tmp_path)
    edge = EdgeSettings(port=0, tls_cert=certificate.cert, tls_key=certificate.key)
    stack = await make_stack(edge=edge, http=replace(LIMITS, keep_alive_seconds=1))
    return stack, ssl.create_default_context(cafile=certificate.cert)


async def connect_tls(
    stack: Stack, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert stack.edge_url is not None
    parts = urlsplit(stack.edge_url)
    return await asyncio.open_connection(parts.hostname, parts.port, ssl=context, server_hostname="localhost")


async def test_https_refuses_a_huge_header_with_431(tls_edge: tuple[Stack, ssl.SSLContext]) -> None:
    stack, context = tls_edge
    reader, writer = await connect_tls(stack, context)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert b" 431 " in status_line


async def test_https_closes_a_slowly_sent_head(tls_edge: tuple[Stack, ssl.SSLContext]) -> None:
    stack, context = tls_edge
    reader, writer = await connect_tls(stack, context)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        for _ in range(20):
            await asyncio.sleep(0.2)
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
            if reader.at_eof():
                break
        await asyncio.wait_for(reader.read(), 3)
    assert time.monotonic() - started < 3.5
    writer.close()


async def test_https_edge_answers_408_to_a_body_that_never_ends(
    tls_edge: tuple[Stack, ssl.SSLContext],
) -> None:
    stack, context = tls_edge
    reader, writer = await connect_tls(stack, context)
    writer.write(b'POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{"event":')
    started = time.monotonic()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert b" 408 " in status_line
    assert time.monotonic() - started < 3
