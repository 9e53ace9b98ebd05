"""The deployment files in ops/deploy/ are checked by the tools that will read them: every command
line of the systemd units is parsed by the program it runs, every variable of the environment
files is one headwater reads, the NATS config is validated by nats-server with the example node
environment (tests/test_ha_cluster.py runs a cluster from it), the units by `systemd-analyze
verify` and the HAProxy config by `haproxy -c` and in front of two live edges (both skipped when
the tool is not installed)."""

from __future__ import annotations

import asyncio
import csv
import re
import shlex
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree import ElementTree

import click
import httpx
import pytest
from hw_testing import BIN, admin_headers, basic_auth, cli_env, create_project, eventually, self_signed

from headwater.edge.settings import EdgeSettings
from headwater.ops.cli import main
from headwater.ops.natsauth import ROLES, authorization_config
from headwater.ops.options import ADMIN_TOKEN_ENV, ADMIN_TOKENS_ENV
from headwater.ops.ports import free_ports
from headwater.ops.runtime import Stack

DEPLOY = Path(__file__).resolve().parents[1] / "ops" / "deploy"
INSTALL_BIN = "/opt/headwater/bin/"  # where the units expect headwater's virtualenv
UNITS = sorted(DEPLOY.glob("*.service"))


def exec_start(unit: Path) -> list[str]:
    [line] = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines as systemd's EnvironmentFile reads them (comments on their own lines)."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip().strip('"')
    return pairs


def headwater_variables(command: click.Command = main) -> set[str]:
    """Every HEADWATER_* variable an option of any `headwater` command reads."""
    names = {
        env
        for param in command.params
        if isinstance(param, click.Option) and param.envvar
        for env in ([param.envvar] if isinstance(param.envvar, str) else param.envvar)
    }
    if isinstance(command, click.Group):  # the top group imports its commands when asked (ops/cli.py)
        context = click.Context(command)
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            assert sub is not None, name
            names |= headwater_variables(sub)
    return names


def test_the_units_exist_for_every_role() -> None:
    assert {u.name for u in UNITS} == {
        "headwater-edge.service",
        "headwater-control.service",
        "headwater-consumer.service",
        "headwater-sessionizer.service",
        "nats-server.service",
    }
    for unit in UNITS:
        assert exec_start(unit)[0].startswith(INSTALL_BIN), unit.name


@pytest.mark.parametrize("unit", [u for u in UNITS if u.name.startswith("headwater-")], ids=lambda u: u.name)
def test_a_headwater_unit_runs_a_command_line_headwater_accepts(unit: Path) -> None:
    """The unit's own command line, with `--help` added: click parses every flag and the role
    before it prints the help, so an unknown flag or role fails here."""
    argv = exec_start(unit)
    assert argv[1:3] == ["serve", unit.stem.removeprefix("headwater-")]
    command = [str(BIN / Path(argv[0]).name), *argv[1:], "--help"]
    result = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    for variable in env_file_names(unit):
        assert variable in headwater_variables(), (
            f"{unit.name} sets {variable}, which headwater does not read"
        )


def env_file_names(unit: Path) -> set[str]:
    return set(re.findall(r"^Environment=(HEADWATER_\w+)=", unit.read_text(), re.MULTILINE))


def test_the_environment_files_set_only_variables_headwater_reads() -> None:
    known = headwater_variables() | {ADMIN_TOKEN_ENV, ADMIN_TOKENS_ENV}
    shared = env_file(DEPLOY / "headwater.env")
    assert set(shared) <= known, set(shared) - known
    assert set(env_file(DEPLOY / "control.env")) <= known
    # Every role loads headwater.env: nothing in it may be refused by one of them.
    assert not {"HEADWATER_PORT", "HEADWATER_WORKERS"} & set(shared)
    nats_urls = shared["HEADWATER_NATS_URL"].split(",")
    assert len(nats_urls) == 3 and all(url.startswith("nats://") for url in nats_urls)


def test_the_clickhouse_cluster_config_is_well_formed_and_names_the_cluster_headwater_uses() -> None:
    """Only its shape: no ClickHouse server installs here to load it."""
    root = ElementTree.parse(DEPLOY / "clickhouse-cluster.xml").getroot()  # noqa: S314 - our own file
    servers = root.find("remote_servers")
    assert servers is not None
    [cluster] = list(servers)
    assert cluster.tag == "headwater" and len(cluster.findall("shard/replica")) == 3
    assert "# HEADWATER_CLICKHOUSE_CLUSTER=headwater" in (DEPLOY / "headwater.env").read_text()


def test_nats_server_accepts_the_cluster_config_with_the_example_environment(tmp_path: Path) -> None:
    """The unit's command line, with the repository's config and `-t` (check the config, then exit);
    the example certificate paths replaced by a real certificate, which nats-server loads."""
    argv = exec_start(DEPLOY / "nats-server.service")
    command = [str(BIN / "nats-server"), *argv[1:]]
    command[command.index("/etc/headwater/nats-server.conf")] = str(DEPLOY / "nats-server.conf")
    certificate = self_signed(tmp_path)
    environment = {**cli_env(), **env_file(DEPLOY / "nats-server.env")}
    environment |= {"NATS_TLS_CERT": certificate.cert, "NATS_TLS_KEY": certificate.key}
    result = subprocess.run([*command, "-t"], capture_output=True, text=True, env=environment, timeout=60)
    assert result.returncode == 0 and "is valid" in result.stdout + result.stderr, result.stderr


def test_the_shipped_nats_users_are_the_ones_headwater_grants() -> None:
    """nats-auth.conf is `authorization_config` with the passwords left to the environment, and
    the environment example sets each of them; every headwater unit logs in as its own user."""
    variables = {role: f"NATS_{role.upper()}_PASSWORD" for role in ROLES}
    shipped = (DEPLOY / "nats-auth.conf").read_text()
    assert (
        shipped.split("authorization {", 1)[1]
        == authorization_config(variables, variables=True).split("authorization {", 1)[1]
    )
    assert set(variables.values()) <= set(env_file(DEPLOY / "nats-server.env"))
    assert 'include "nats-auth.conf"' in (DEPLOY / "nats-server.conf").read_text()
    for unit in UNITS:
        if unit.name.startswith("headwater-"):
            role = unit.stem.removeprefix("headwater-")
            assert f"Environment=HEADWATER_NATS_USER={role}\n" in unit.read_text(), unit.name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """`verify` checks that each ExecStart binary exists: point the copies at this virtualenv."""
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(INSTALL_BIN, f"{BIN}/"))
        copies.append(str(copy))
    result = subprocess.run(
        ["systemd-analyze", "verify", *copies], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def haproxy_pem(directory: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 and its key in one PEM file, as HAProxy's `crt`
    takes them."""
    made = self_signed(directory)
    pem = directory / "headwater.pem"
    pem.write_bytes(Path(made.cert).read_bytes() + Path(made.key).read_bytes())
    return pem


def local_haproxy_config(
    edges: list[str], controls: list[str], ingest_port: int, control_port: int, cert: Path, admin: Path
) -> str:
    """ops/deploy/haproxy.cfg with its example addresses, certificate and socket replaced by local
    ones; `edges` and `controls` are host:port, one per server line of the file."""
    text = (DEPLOY / "haproxy.cfg").read_text()
    text = text.replace("/etc/haproxy/certs/headwater.pem", str(cert))
    text = text.replace("/run/haproxy/admin.sock", str(admin))
    # HAProxy raises its file limit to about 2 x maxconn, beyond what a test machine may allow.
    text = re.sub(r"maxconn \d+", "maxconn 2000", text)
    text = text.replace("bind :443 ", f"bind 127.0.0.1:{ingest_port} ")
    text = text.replace("bind 10.0.0.10:8701", f"bind 127.0.0.1:{control_port}")
    for kind, targets in (("edge", edges), ("control", controls)):
        for n, target in enumerate(targets, 1):
            text, found = re.subn(rf"(server {kind}-{n}) \S+", rf"\1 {target}", text)
            assert found == 1, f"no server line {kind}-{n} in haproxy.cfg"
    assert "10.0.0." not in text.split("global", 1)[1], "an example address was left in"
    return text


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_config(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        (DEPLOY / "haproxy.cfg")
        .read_text()
        .replace("/etc/haproxy/certs/headwater.pem", str(haproxy_pem(tmp_path)))
    )
    result = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


class HAProxy:
    def __init__(self, config: Path, admin: Path) -> None:
        self.admin = admin
        self.process = subprocess.Popen(
            ["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def command(self, line: str) -> str:
        """One command of HAProxy's runtime API, as `socat stdio /run/haproxy/admin.sock` sends it."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.admin))
            sock.sendall(line.encode() + b"\n")
            return b"".join(iter(lambda: sock.recv(65536), b"")).decode()

    def status(self) -> dict[str, str]:
        """`backend/server` → UP, DOWN, DRAIN, … from the runtime API's `show stat` (CSV); empty
        while HAProxy is starting."""
        if self.process.poll() is not None:
            assert self.process.stderr is not None
            raise AssertionError(f"haproxy exited: {self.process.stderr.read().decode()}")
        try:
            lines = self.command("show stat").lstrip("# ").splitlines()
        except (FileNotFoundError, ConnectionRefusedError):
            return {}
        rows = list(csv.DictReader(lines))
        return {
            f"{r['pxname']}/{r['svname']}": r["status"]
            for r in rows
            if r["svname"] not in ("FRONTEND", "BACKEND")
        }

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def dead_port() -> int:
    """A port nothing listens on: a host that is down."""
    return free_ports(1)[0]


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    cert = haproxy_pem(tmp_path)
    return cert, ssl.create_default_context(cafile=str(cert))


def accepted(metrics: str) -> float:
    return sum(
        float(value)
        for value in re.findall(r'^headwater_edge_events_total\{[^}]*"accepted"[^}]*\} (\S+)$', metrics, re.M)
    )


def host_port(url: str | None) -> str:
    assert url is not None
    return url.removeprefix("http://")


@pytest.fixture
async def tls_client(tls: tuple[Path, ssl.SSLContext]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=tls[1], timeout=15) as client:
        yield client


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
async def test_haproxy_spreads_events_over_the_edges_and_drains_one(  # type: ignore[no-untyped-def]
    make_stack, http: httpx.AsyncClient, tls_client: httpx.AsyncClient, tls, project_id: str, tmp_path: Path,
    dead_port: int,
) -> None:  # fmt: skip
    """Two edges (edge-3 of the file is a host that is down) and one control plane (control-2 is
    down) behind the shipped config: events spread over the live edges over HTTPS; an edge drained
    through the runtime API gets no more of them, and once stopped nothing fails either."""
    backend: Stack = await make_stack(control=True, consumer=True)
    edge_a: Stack = await make_stack(edge=EdgeSettings(port=0, spool_dir=None))
    edge_b: Stack = await make_stack(edge=EdgeSettings(port=0, spool_dir=None))
    key = (await create_project(http, backend, project_id))["secret_key"]
    for edge in (edge_a, edge_b):
        assert edge.registry is not None
        registry = edge.registry

        async def known(registry=registry) -> bool:  # type: ignore[no-untyped-def]
            return registry.get(project_id) is not None

        await eventually(known, bool, timeout=10)
    ingest_port, control_port = free_ports(2)
    down = f"127.0.0.1:{dead_port}"
    config, admin = tmp_path / "haproxy.cfg", tmp_path / "admin.sock"
    config.write_text(
        local_haproxy_config(
            [host_port(edge_a.edge_url), host_port(edge_b.edge_url), down],
            [host_port(backend.control_url), down],
            ingest_port,
            control_port,
            tls[0],
            admin,
        )
    )
    haproxy = HAProxy(config, admin)
    sent: list[str] = []

    async def send(count: int) -> list[int]:
        statuses = []
        for _ in range(count):
            message_id = f"lb-{len(sent)}"
            response = await tls_client.post(
                f"https://127.0.0.1:{ingest_port}/v1/track",
                json={"type": "track", "event": "LB", "userId": "u", "messageId": message_id},
                headers=basic_auth(key),
            )
            statuses.append(response.status_code)
            sent.append(message_id)
        return statuses

    try:
        # Ready once the health checks (/readyz) have found which servers are up.
        expected = {"edges/edge-1": "UP", "edges/edge-2": "UP", "edges/edge-3": "DOWN"}
        expected |= {"control/control-1": "UP", "control/control-2": "DOWN"}
        await eventually(
            lambda: asyncio.to_thread(haproxy.status),
            lambda status: {k: v.split()[0] for k, v in status.items()} == expected,
            timeout=30,
            interval=0.5,
        )
        assert set(await send(20)) == {200}
        # Only the ingest paths are forwarded: the edges' other answers stay inside.
        for path in ("/metrics", "/readyz", "/healthz", "/v1/projects", "/v1/track/../../metrics"):
            refused = await tls_client.get(f"https://127.0.0.1:{ingest_port}{path}")
            assert refused.status_code == 404 and "headwater" not in refused.text, path
        sdk = await tls_client.get(f"https://127.0.0.1:{ingest_port}/sdk/v1/headwater.js")
        assert sdk.status_code == 200

        async def accepted_by(edge: Stack) -> float:
            return accepted((await http.get(f"{edge.edge_operator_url}/metrics")).text)

        before = await accepted_by(edge_a)
        assert before > 0 and await accepted_by(edge_b) > 0, "the events did not spread"

        assert haproxy.command("set server edges/edge-1 state drain").strip() == ""
        assert haproxy.status()["edges/edge-1"] == "DRAIN"
        assert set(await send(20)) == {200}
        assert await accepted_by(edge_a) == before, "a drained edge still got events"
        await edge_a.stop()
        assert set(await send(20)) == {200}

        listed = await tls_client.get(f"http://127.0.0.1:{control_port}/v1/projects", headers=admin_headers())
        assert listed.status_code == 200 and project_id in listed.text
    finally:
        haproxy.stop()

    assert backend.clickhouse is not None
    clickhouse = backend.clickhouse
    sql = f"SELECT message_id, count() FROM hw_{project_id}.events FINAL GROUP BY message_id"

    async def stored() -> dict[str, int]:
        rows = await asyncio.to_thread(lambda: clickhouse.query(sql).result_rows)
        return {str(m): int(c) for m, c in rows}

    copies = await eventually(stored, lambda s: len(s) >= len(sent), timeout=30, interval=0.3)
    assert copies == dict.fromkeys(sent, 1)


def test_the_consumer_unit_signals_the_consumer_alone() -> None:
    """The consumer stops its worker processes itself after their batches; systemd's default
    KillMode would SIGTERM them with it, mid-batch."""
    unit = (DEPLOY / "headwater-consumer.service").read_text()
    assert re.search(r"^KillMode=mixed$", unit, re.MULTILINE)
