"""HTTPS: the edge and the control plane serve TLS with a certificate and key, HTTP/2 and HTTP/1.1
offered by ALPN. A self-signed certificate for 127.0.0.1 is made per test; events sent over both
protocols land in ClickHouse, and bad TLS configurations stop `headwater serve` with their reason."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from hw_testing import (
    ADMIN_TOKEN,
    BIN,
    Certificate,
    admin_headers,
    basic_auth,
    cli_env,
    create_project,
    eventually,
    query_rows,
    self_signed,
    track_event,
)

from headwater.control.settings import AdminToken, ControlSettings
from headwater.edge.settings import EdgeSettings
from headwater.edge.streams import StreamSettings
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.ports import free_ports
from headwater.ops.runtime import Stack, StackSettings
from headwater.ops.tlsserver import server_context

pytestmark = pytest.mark.services


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return self_signed(tmp_path)


def trusting(certificate: Certificate) -> ssl.SSLContext:
    """A client context that trusts only the test's certificate (and checks the host name)."""
    return ssl.create_default_context(cafile=certificate.cert)


@pytest.fixture
async def https(certificate: Certificate) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP/1.1 over TLS; `create_project` and `query_rows` use it against the HTTPS control API."""
    async with httpx.AsyncClient(timeout=15, verify=trusting(certificate)) as client:
        yield client


@pytest.fixture
async def https2(certificate: Certificate) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP/2 over TLS (ALPN offers h2 first, so the server picks it when it can)."""
    async with httpx.AsyncClient(timeout=15, verify=trusting(certificate), http1=False, http2=True) as client:
        yield client


@pytest.fixture
async def tls_stack(
    nats_server: NatsServerProcess, clickhouse_url: str, certificate: Certificate
) -> AsyncIterator[Stack]:
    """Edge and control over HTTPS, a consumer, in this process (as `headwater up --tls-cert`)."""
    tls = {"tls_cert": certificate.cert, "tls_key": certificate.key}
    stack = Stack(
        StackSettings(
            nats_url=nats_server.url,
            streams=StreamSettings(),
            clickhouse_url=clickhouse_url,
            edge=EdgeSettings(port=0, **tls),
            control=ControlSettings(
                clickhouse_url=clickhouse_url,
                admin_tokens=(AdminToken("tests", ADMIN_TOKEN),),
                port=0,
                **tls,
            ),
            consumer=None,
        )
    )
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()


async def test_events_over_http11_and_http2_land_in_clickhouse(
    tls_stack: Stack, make_stack, https: httpx.AsyncClient, https2: httpx.AsyncClient, project_id: str
) -> None:  # type: ignore[no-untyped-def]
    await make_stack(consumer=True)
    assert tls_stack.edge_url and tls_stack.edge_url.startswith("https://127.0.0.1:")
    assert tls_stack.control_url and tls_stack.control_url.startswith("https://127.0.0.1:")
    secret_key = (await create_project(https, tls_stack, project_id))["secret_key"]

    for client, message_id, version in ((https, "over-h1", "HTTP/1.1"), (https2, "over-h2", "HTTP/2")):
        response = await client.post(
            f"{tls_stack.edge_url}/v1/track",
            json=track_event(messageId=message_id),
            headers=basic_auth(secret_key),
        )
        assert response.status_code == 200, response.text
        assert response.http_version == version
        assert "server" not in response.headers

    async def rows() -> list[list[object]]:
        return await query_rows(
            https, tls_stack, project_id, "SELECT message_id FROM events FINAL ORDER BY message_id"
        )

    assert await eventually(rows, lambda r: len(r) == 2, timeout=15) == [["over-h1"], ["over-h2"]]


async def test_the_control_api_and_health_speak_http2(tls_stack: Stack, https2: httpx.AsyncClient) -> None:
    projects = await https2.get(f"{tls_stack.control_url}/v1/projects", headers=admin_headers())
    assert projects.status_code == 200, projects.text
    assert projects.http_version == "HTTP/2"
    health = await https2.get(f"{tls_stack.edge_url}/healthz")
    assert (health.status_code, health.http_version) == (200, "HTTP/2")


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/2"])
async def test_an_oversized_body_is_refused_and_the_client_can_go_on(
    tls_stack: Stack, https: httpx.AsyncClient, https2: httpx.AsyncClient, version: str
) -> None:
    """The edge answers 413 before reading the announced body: the answer arrives, and over HTTP/2
    the connection survives the body's DATA that follow it (ops/h2compat.py)."""
    assert tls_stack.settings.edge is not None
    client = https2 if version == "HTTP/2" else https
    response = await client.post(
        f"{tls_stack.edge_url}/v1/track",
        content=b"x" * (tls_stack.settings.edge.max_body_bytes + 1),
        headers={**basic_auth("any-key"), "Content-Type": "application/json"},
    )
    assert (response.status_code, response.http_version) == (413, version)
    assert response.json()["code"] == "payload_too_large"
    health = await client.get(f"{tls_stack.edge_url}/healthz")
    assert (health.status_code, health.http_version) == (200, version)


async def test_plain_http_to_the_tls_port_fails(tls_stack: Stack) -> None:
    assert tls_stack.edge_url is not None
    plain = tls_stack.edge_url.replace("https://", "http://")
    async with httpx.AsyncClient(timeout=10) as client:
        with pytest.raises(httpx.TransportError):
            await client.get(f"{plain}/healthz")


async def test_a_client_that_does_not_trust_the_certificate_is_refused(tls_stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as client:  # the system's CAs, not the test's
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(f"{tls_stack.edge_url}/healthz")


@pytest.mark.parametrize("http2", [False, True])
async def test_a_stop_with_idle_client_connections_is_clean(
    nats_server: NatsServerProcess, certificate: Certificate, caplog: pytest.LogCaptureFixture, http2: bool
) -> None:
    """Pooled clients keep idle connections open without reading them, so they never answer the
    server's TLS close_notify: the stop must not wait for them long, nor log an error (it used to
    wait 30 s and log a TimeoutError traceback per connection)."""
    tls = {"tls_cert": certificate.cert, "tls_key": certificate.key}
    stack = Stack(
        StackSettings(nats_url=nats_server.url, streams=StreamSettings(), edge=EdgeSettings(port=0, **tls))
    )
    await stack.start()
    try:
        async with httpx.AsyncClient(timeout=15, verify=trusting(certificate), http2=http2) as client:
            assert (await client.get(f"{stack.edge_url}/healthz")).status_code == 200
            await stack.stop()
    finally:
        await stack.stop()  # again, in case the test failed before: a second stop does nothing
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_an_expired_certificate_is_served_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expired = self_signed(tmp_path, valid_days=-1)
    with caplog.at_level(logging.WARNING, logger="headwater.ops.tlsserver"):
        server_context(expired.cert, expired.key)
    assert any("expired" in r.getMessage() for r in caplog.records), caplog.text


# `headwater serve` as operators run it.


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "headwater"), "serve", *args],
        capture_output=True,
        text=True,
        env={**cli_env(), **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize("given", ["--tls-cert", "--tls-key"])
def test_one_tls_flag_without_the_other_is_a_usage_error(certificate: Certificate, given: str) -> None:
    path = certificate.cert if given == "--tls-cert" else certificate.key
    result = serve("edge", "--nats-url", "nats://127.0.0.1:1", given, path)
    assert result.returncode == 2, result.stderr
    missing = "--tls-key" if given == "--tls-cert" else "--tls-cert"
    assert f"{given} needs {missing}" in result.stderr


def test_tls_files_are_read_from_the_environment(certificate: Certificate) -> None:
    result = serve("edge", "--nats-url", "nats://127.0.0.1:1", env={"HEADWATER_TLS_CERT": certificate.cert})
    assert result.returncode == 2, result.stderr
    assert "--tls-cert needs --tls-key" in result.stderr


def test_a_missing_certificate_file_is_a_usage_error(certificate: Certificate, tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.crt")
    result = serve(
        "edge", "--nats-url", "nats://127.0.0.1:1", "--tls-cert", missing, "--tls-key", certificate.key
    )
    assert result.returncode == 2, result.stderr
    assert "--tls-cert" in result.stderr and "does not exist" in result.stderr


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("garbage_cert", r"the TLS certificate \S+ holds no PEM certificate"),
        ("garbage_key", r"the TLS key \S+ holds no PEM private key"),
        ("other_key", r"the TLS key \S+ does not belong to the certificate \S+"),
        ("encrypted_key", r"the TLS key \S+ is encrypted"),
    ],
)
def test_a_bad_certificate_or_key_stops_serve_with_its_reason(
    certificate: Certificate, tmp_path: Path, problem: str, message: str
) -> None:
    cert, key = certificate.cert, certificate.key
    if problem == "garbage_cert":
        cert = str(tmp_path / "garbage.crt")
        Path(cert).write_text("not a certificate\n")
    elif problem == "garbage_key":
        key = str(tmp_path / "garbage.key")
        Path(key).write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    elif problem == "other_key":
        key = self_signed(tmp_path, "other").key
    else:
        key = str(tmp_path / "encrypted.key")
        private = serialization.load_pem_private_key(Path(certificate.key).read_bytes(), password=None)
        Path(key).write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
    # The files are checked before NATS is contacted: nothing listens on port 1.
    result = serve("edge", "--nats-url", "nats://127.0.0.1:1", "--tls-cert", cert, "--tls-key", key)
    assert result.returncode == 1, result.stderr
    assert re.search(r"Error: " + message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def tls_edge_workers(
    nats_server: NatsServerProcess, certificate: Certificate, tmp_path: Path
) -> Iterator[str]:
    """`serve edge --workers 2` with TLS: each worker its own HTTPS listener on the shared port."""
    port, operator_port = free_ports(2)
    process = subprocess.Popen(
        [str(BIN / "headwater"), "serve", "edge", "--workers", "2", "--port", str(port),
         "--operator-port", str(operator_port),
         "--nats-url", nats_server.url, "--spool-dir", str(tmp_path / "spool"),
         "--tls-cert", certificate.cert, "--tls-key", certificate.key],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cli_env(),
    )  # fmt: skip
    assert process.stdout is not None
    urls = set()
    for _ in range(2):
        line = process.stdout.readline()
        match = re.search(r"running on (https://\S+)", line)
        assert match, f"unexpected line from serve edge: {line!r}"
        urls.add(match.group(1))
    assert len(urls) == 1
    yield urls.pop()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0


@pytest.mark.slow
async def test_edge_workers_serve_tls_on_one_port(
    tls_edge_workers: str, make_stack, https2: httpx.AsyncClient, project_id: str
) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = await make_stack(control=True, consumer=True)
    async with httpx.AsyncClient(timeout=15) as http:
        secret_key = (await create_project(http, stack, project_id))["secret_key"]

        async def send() -> httpx.Response:
            return await https2.post(
                f"{tls_edge_workers}/v1/track",
                json=track_event(messageId="from-tls-worker"),
                headers=basic_auth(secret_key),
            )

        # The workers learn of the project through their KV watchers, within a moment.
        response = await eventually(send, lambda r: r.status_code == 200, timeout=10)
        assert response.http_version == "HTTP/2"

        async def rows() -> list[list[object]]:
            return await query_rows(http, stack, project_id, "SELECT message_id FROM events FINAL")

        assert await eventually(rows, bool, timeout=15) == [["from-tls-worker"]]


# `headwater up` with TLS, as a user runs it.


def _banner_command(lines: list[str], heading: str) -> str:
    return lines[lines.index(heading) + 1].strip()


@pytest.mark.slow
def test_up_serves_https_and_its_printed_commands_work(certificate: Certificate, tmp_path: Path) -> None:
    env = {**cli_env(), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = subprocess.Popen(
        [str(BIN / "headwater"), "up", "--data-dir", str(tmp_path / "hw"),
         "--edge-port", "0", "--control-port", "0", "--nats-port", "0",
         "--operator-port", "0", "--consumer-port", "0", "--sessionizer-port", "0",
         "--tls-cert", certificate.cert, "--tls-key", certificate.key],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if "stop with Ctrl-C" in line:
                break
        banner = "\n".join(lines)
        assert re.search(r"edge +https://127\.0\.0\.1:\d+", banner), banner
        assert re.search(r"control API +https://127\.0\.0\.1:\d+", banner), banner

        # The printed commands work once the certificate is trusted as the banner says.
        trusted = {**env, "CURL_CA_BUNDLE": certificate.cert, "SSL_CERT_FILE": certificate.cert}

        def run(command: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, env=trusted, timeout=60
            )

        sent = run(_banner_command(lines, "send an event:"))
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["success"] is True
        query = _banner_command(lines, "see it in ClickHouse:")
        result = run(query)
        for _ in range(50):
            if "Signed Up" in result.stdout:
                break
            time.sleep(0.2)
            result = run(query)
        assert "Signed Up" in result.stdout, result.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code == 0, "\n".join(lines)
