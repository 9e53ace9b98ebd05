"""`headwater up` as a user runs it: a subprocess, its printed curl and query commands, SIGTERM,
restart with the data kept, and no orphaned nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import nats
import pytest
from hw_testing import BIN, cli_env
from hw_up import UpProcess

pytestmark = [pytest.mark.services, pytest.mark.slow]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it only waits for its parent to reap it.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def wait_dead(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _nats_refuses_anonymous(url: str) -> bool:
    async def attempt() -> bool:
        try:
            client = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
        except (nats.errors.Error, OSError):
            return True
        await client.close()
        return False

    return asyncio.run(attempt())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "hw"


def test_up_curl_query_stop_restart(data_dir: Path) -> None:
    up = UpProcess(data_dir)
    started = time.monotonic()
    try:
        up.wait_for("stop with Ctrl-C", timeout=60)
        ready_after = time.monotonic() - started
        assert ready_after < 30, f"up took {ready_after:.1f}s to be ready"
        record = json.loads((data_dir / "stack.json").read_text())
        assert (data_dir / "admin-token").stat().st_mode & 0o077 == 0
        assert (data_dir / "stack.json").stat().st_mode & 0o077 == 0  # its URLs may hold passwords
        # NATS wants a login, even on loopback: per-role passwords only the owner reads.
        for role in ("edge", "consumer", "control", "sessionizer", "admin"):
            assert (data_dir / "nats-users" / f"{role}.password").stat().st_mode & 0o077 == 0
        assert _nats_refuses_anonymous(record["nats_url"])
        # Metrics and readiness details are on the operator listeners, not on the public edge.
        [metrics_line] = [line for line in up.output if line.strip().startswith("metrics ")]
        edge_metrics, consumer_metrics, sessionizer_metrics = re.findall(
            r"(http://\S+/metrics)", metrics_line
        )
        assert "headwater_edge_requests_total" in _get(edge_metrics)[1]
        assert "headwater_consumer" in _get(consumer_metrics)[1]
        assert "headwater_sessionizer" in _get(sessionizer_metrics)[1]
        assert _get(record["edge_url"] + "/metrics")[0] == 404
        assert json.loads(_get(record["edge_url"] + "/readyz")[1]) == {"ready": True}
        assert "checks" in json.loads(_get(edge_metrics.replace("/metrics", "/readyz"))[1])

        # The printed curl, run as printed, is accepted...
        sent = up.run(up.command_after("send an event:"))
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["success"] is True

        # ...and the printed query shows the row within 5 s.
        query = up.command_after("see it in ClickHouse:")
        deadline = time.monotonic() + 5
        result = up.run(query)
        while "Signed Up" not in result.stdout and time.monotonic() < deadline:
            time.sleep(0.2)
            result = up.run(query)
        assert result.returncode == 0, result.stderr
        [row] = result.stdout.splitlines()
        assert row.split("\t")[1:] == ["Signed Up", "user-1", '{"plan":"free"}']
    finally:
        code = up.stop()
    assert code == 0, "\n".join(up.output)
    assert "headwater: stopped" in up.output
    # A clean stop is no NATS outage: nothing says the edge fell back to its spool.
    assert not any("circuit breaker" in line or "disconnected" in line for line in up.output), up.output
    assert wait_dead(record["nats_pid"]), "nats-server outlived headwater up"
    assert not (data_dir / "stack.json").exists()

    # With the stack stopped, the embedded data can be queried directly.
    embedded = f"--clickhouse-url chdb://{data_dir}/clickhouse --project demo"
    direct = up.run(f"headwater query {embedded} 'SELECT user_id FROM events'")
    assert direct.stdout.splitlines() == ["user-1"], direct.stderr

    again = UpProcess(data_dir)
    try:
        again.wait_for("stop with Ctrl-C", timeout=60)
        assert not any("secret key (shown once" in line for line in again.output)
        rows = again.run(
            f"headwater query --data-dir {data_dir} --project demo 'SELECT event, user_id FROM events'"
        )
        assert rows.stdout.splitlines() == ["Signed Up\tuser-1"], rows.stderr
        # Operator commands find the running stack's NATS through --data-dir, and say nothing of
        # NATS "disconnecting" when they close their connection on exit.
        dead_letters = again.run(f"headwater dlq list --data-dir {data_dir}")
        assert dead_letters.returncode == 0, dead_letters.stderr
        assert dead_letters.stdout.strip() == "no dead-lettered messages"
        assert "disconnected" not in dead_letters.stderr, dead_letters.stderr
        counted = again.run(
            f"headwater replay --data-dir {data_dir} --project demo --since 1h --dry-run --quiet"
        )
        assert counted.returncode == 0, counted.stderr
        assert "counted: 1 messages, 1 events" in counted.stdout, counted.stdout
        locked = again.run(f"headwater query {embedded} 'SELECT 1'")
        assert locked.returncode != 0
        assert "query through it" in locked.stderr, locked.stderr
        # The query API under `up` cannot reach ingestion nor leave its project's database.
        for sql in ("KILL QUERY WHERE query_kind = 'Insert' ASYNC", "SELECT name FROM system.databases"):
            refused = again.run(f'headwater query --data-dir {data_dir} --project demo "{sql}"')
            assert refused.returncode != 0 and "query_not_allowed" in refused.stderr, refused.stderr
    finally:
        assert again.stop(signal.SIGINT) == 0


def test_killed_up_leaves_no_nats_server_behind(data_dir: Path) -> None:
    up = UpProcess(data_dir)
    try:
        up.wait_for("stop with Ctrl-C", timeout=60)
        nats_pid = json.loads((data_dir / "stack.json").read_text())["nats_pid"]
    finally:
        up.process.kill()
        up.process.wait(10)
    assert wait_dead(nats_pid), "nats-server survived a SIGKILLed parent"


def test_second_up_on_the_same_data_dir_is_refused(data_dir: Path) -> None:
    up = UpProcess(data_dir)
    try:
        up.wait_for("stop with Ctrl-C", timeout=60)
        second = UpProcess(data_dir)
        assert second.process.wait(30) != 0
        second.wait_for("already running", timeout=5)
    finally:
        assert up.stop() == 0


@pytest.mark.parametrize(
    "flag",
    [
        "--edge-port",
        "--control-port",
        "--nats-port",
        "--operator-port",
        "--consumer-port",
        "--sessionizer-port",
    ],
)
def test_a_busy_port_is_named_with_its_flag(tmp_path: Path, flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {flag: "0" for flag in ("--edge-port", "--control-port", "--nats-port")}
        ports |= {"--operator-port": "0", "--consumer-port": "0", "--sessionizer-port": "0", flag: str(port)}
        result = subprocess.run(
            [str(BIN / "headwater"), "up", "--data-dir", str(tmp_path / "hw"),
             *(item for pair in ports.items() for item in pair)],
            capture_output=True, text=True, env=cli_env(), timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: "), result.stderr
    assert str(port) in error and flag in error and "already in use" in error, error
    assert "Traceback" not in result.stderr
