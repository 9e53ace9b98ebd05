"""Helpers shared by the tests (`tests/` is on the pytest pythonpath)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from headwater.core.projects.project import utc_now_iso
from headwater.core.wire.envelope import Envelope
from headwater.core.wire.subjects import MSG_ID_HEADER, events_subject

if TYPE_CHECKING:
    import httpx
    from nats.js import JetStreamContext

    from headwater.ops.runtime import Stack

T = TypeVar("T")
StackFactory = Callable[..., Awaitable["Stack"]]  # the make_stack fixture (conftest.py)
# The make_spooling_stack fixture: a stack and the secret key of the test's project in it.
SpoolingStackFactory = Callable[..., Awaitable[tuple["Stack", str]]]

ADMIN_TOKEN = "test-admin-token-" + "x" * 16
BIN = Path(sys.executable).parent  # where `headwater` and `nats-server` are installed
ROOT = Path(__file__).resolve().parents[1]  # the repository


def run_bench(script: str, *args: str, timeout: float = 300) -> str:
    """`bench/SCRIPT ARGS` from the repository's root (a .py script under this Python; others
    told which Python to use); its output, once it has exited 0."""
    path = str(ROOT / "bench" / script)
    command = [sys.executable, path] if script.endswith(".py") else [path]
    result = subprocess.run(
        [*command, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return result.stdout


def cli_env() -> dict[str, str]:
    """The environment for a `headwater` subprocess: none of the caller's HEADWATER_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}


@dataclass(frozen=True, slots=True)
class Run:
    """How a `headwater` command ended."""

    code: int
    stdout: str  # undecodable bytes replaced; stdout_bytes holds them as written
    stderr: str
    stdout_bytes: bytes

    def json(self) -> Any:
        assert self.code == 0, self.stderr
        return json.loads(self.stdout)


async def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str = "", cwd: Path | None = None
) -> Run:
    """`headwater ARGS` as an asyncio subprocess (the test's event loop keeps serving meanwhile),
    in `env` (default: cli_env()), with `stdin` as its input; at most 60 s."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / "headwater"),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env() if env is None else env,
        cwd=cwd,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(errors="replace"), stderr.decode(), stdout)


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic_auth(key: str) -> dict[str, str]:
    """Segment style: the write key is the HTTP Basic username, the password is empty."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 10.0, interval: float = 0.1
) -> T:
    """Poll `probe` until `done(result)`; fail with the last result after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            shown = getattr(result, "text", None) or result  # an HTTP response: show its body
            raise AssertionError(f"condition not met within {timeout}s; last result: {shown!r}")
        await asyncio.sleep(interval)


def track_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "Signed Up", "userId": "user-1", "properties": {"plan": "free"}}
    event.update(overrides)
    return event


async def create_project(
    http: httpx.AsyncClient, stack: Stack, project_id: str, **body: Any
) -> dict[str, Any]:
    """Create a project through the stack's control API and wait until its registry (a stack with an
    edge or a consumer has one) knows it, so its edge accepts the keys; returns the API's answer
    (with `public_key` and `secret_key`)."""
    response = await http.post(
        f"{stack.control_url}/v1/projects", json={"id": project_id, **body}, headers=admin_headers()
    )
    assert response.status_code == 201, response.text
    registry = stack.registry
    if registry is None:
        return dict(response.json())

    async def known() -> bool:
        return registry.get(project_id) is not None

    await eventually(known, bool, timeout=5)
    return dict(response.json())


def track_envelope(project_id: str, request_id: str, *message_ids: str) -> bytes:
    """An envelope as the edge writes it, received now, of one track event per messageId."""
    events = [{**track_event(messageId=m), "type": "track"} for m in message_ids]
    return Envelope(project_id, request_id, utc_now_iso(), events).encode()


async def publish_envelope(js: JetStreamContext, project_id: str, request_id: str, body: bytes) -> None:
    """`body` on the project's events subject, its request id as Nats-Msg-Id (as the edge publishes)."""
    await js.publish(events_subject(project_id), body, headers={MSG_ID_HEADER: request_id})


async def publish_tracks(js: JetStreamContext, project_id: str, request_id: str, *message_ids: str) -> None:
    await publish_envelope(js, project_id, request_id, track_envelope(project_id, request_id, *message_ids))


async def migrate_in_a_process(clickhouse_url: str, project_id: str) -> None:
    """Migrate the project's database from a short-lived process: a consumer process owns its
    embedded ClickHouse (one process per data directory) while it runs."""
    prepare = (
        "from headwater.control.clickhouse import connect\n"
        "from headwater.core.migrations import apply_migrations\n"
        f"apply_migrations(connect({clickhouse_url!r}), 'hw_{project_id}')"
    )
    await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", prepare], check=True, env=cli_env(), timeout=120
    )


async def query_in_a_process(clickhouse_url: str, project_id: str, sql: str) -> list[str]:
    """`headwater query` from a short-lived process, once the consumer process that owned the
    embedded ClickHouse has stopped: the answer's values, split on whitespace."""
    result = await asyncio.to_thread(
        subprocess.run,
        [str(BIN / "headwater"), "query", "--clickhouse-url", clickhouse_url, "--project", project_id, sql],
        capture_output=True, text=True, env=cli_env(), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


# Project settings under which one client network may send 1 event/s, in bursts of 2.
ONE_EVENT_PER_IP_PER_SECOND = {"rate_limits": {"ip_events_per_second": 1, "burst_seconds": 2}}


async def track_from(http: httpx.AsyncClient, stack: Stack, secret_key: str, ip: str) -> int:
    """The status of a track event sent to the stack's edge as from `ip`, through a proxy the
    edge must trust (X-Forwarded-For from 127.0.0.1)."""
    headers = basic_auth(secret_key) | {"X-Forwarded-For": ip}
    response = await http.post(f"{stack.edge_url}/v1/track", json=track_event(), headers=headers)
    return response.status_code


async def stored_copies(stack: Stack, project_id: str) -> dict[str, int]:
    """messageId → copies visible with FINAL (exactly once: 1 each), read from the stack's ClickHouse."""
    clickhouse = stack.clickhouse
    assert clickhouse is not None
    sql = f"SELECT message_id, count() FROM hw_{project_id}.events FINAL GROUP BY message_id"
    rows = await asyncio.to_thread(lambda: clickhouse.query(sql).result_rows)
    return {str(message_id): int(copies) for message_id, copies in rows}


async def query_rows(http: httpx.AsyncClient, stack: Stack, project_id: str, sql: str) -> list[list[Any]]:
    """Read-only SQL in the project's database, through the control API."""
    response = await http.post(
        f"{stack.control_url}/v1/projects/{project_id}/query", json={"sql": sql}, headers=admin_headers()
    )
    assert response.status_code == 200, response.text
    return list(response.json()["rows"])


@dataclass(frozen=True)
class Certificate:
    """Paths of a PEM certificate and its key."""

    cert: str
    key: str


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def self_signed(directory: Path, name: str = "server", valid_days: int = 1) -> Certificate:
    """A certificate for localhost and 127.0.0.1, signed by its own key, valid until `valid_days`
    from now (negative: expired)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    start = (
        now - datetime.timedelta(minutes=5)
        if valid_days > 0
        else now + datetime.timedelta(days=2 * valid_days)
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_key_pem(key))
    key_path.chmod(0o600)
    return Certificate(str(cert_path), str(key_path))
