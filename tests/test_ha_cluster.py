"""HA on a real 3-node NATS cluster: NATS nodes die under load and nothing acknowledged is lost.

The cluster runs from the config operators deploy (ops/deploy/nats-server.conf) on loopback, with
every stream and bucket at three replicas. One control plane creates the project; two edges take
the load, each with all three nodes in `--nats-url` and its own spool; two consumers write to
ClickHouse. While a load generator sends events with unique messageIds at a steady rate to both
edges, a node that is not the HW_EVENTS leader is killed and restarted, then the leader itself.

The embedded ClickHouse (chdb) allows one process per data directory, so the two consumer
processes cannot share one database here: each writes to its own directory, and the check is on
their union. Every event that got a 2xx must be in the union; none may show twice within one
database after FINAL; the events present in both databases (a message redelivered to the other
process, e.g. after an ack was lost with a dying node) are counted and printed. With a ClickHouse
server both consumers write to one database, where ReplacingMergeTree collapses those copies.
Beneath FINAL: HW_EVENTS must hold each event once (Nats-Msg-Id drops a publish the edge repeated
from its spool), so physical rows beyond one per event can only be redeliveries; they are printed.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import ssl
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from hw_testing import (
    ADMIN_TOKEN,
    BIN,
    Certificate,
    admin_headers,
    basic_auth,
    cli_env,
    eventually,
    self_signed,
)
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from headwater.control.audit import AUDIT_STREAM
from headwater.control.idempotency import IDEMPOTENCY_BUCKET
from headwater.control.store import PROJECTS_BUCKET
from headwater.core.wire.subjects import DLQ_STREAM, EVENTS_STREAM
from headwater.ops.natsauth import ROLES, NatsAuth
from headwater.ops.natscluster import NatsCluster, stream_leader
from headwater.ops.natsconn import connect_nats

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
NATS_CONFIG = ROOT / "ops" / "deploy" / "nats-server.conf"
DURABLE = "hw-clickhouse"


class Role:
    """One `headwater serve ROLE` process on a free port; its log (stderr) goes to a file."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.command = [str(BIN / "headwater"), "serve", *args, "--port", "0", "--operator-port", "0"]
        self.log_file = log_dir / f"{name}.log"
        self.env = {**cli_env(), **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.operator_url = ""  # an edge's /metrics and detailed /readyz

    def start(self) -> str:
        with self.log_file.open("w") as log:
            self.process = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=log, text=True, env=self.env
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "headwater edge running on http://… (pid …)"
        found = re.search(r" on (http://\S+)", line)
        assert found, f"{self.name} did not start: {line!r}\n{self.log_tail()}"
        self.url = found.group(1)
        operator = re.search(r"\(operator: (http://\S+)\)", line)
        self.operator_url = operator.group(1) if operator else ""
        return self.url

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM (the role flushes, acks and closes), then SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


class SteadyLoad:
    """Single events with unique messageIds at `rate` requests/s, alternating between the edges
    (at most `max_in_flight` at once); records which got a 2xx and which did not."""

    def __init__(self, http: httpx.AsyncClient, edge_urls: list[str], key: str, rate: float = 150.0) -> None:
        self._http, self._urls, self._key, self._rate = http, edge_urls, key, rate
        self._ids = (f"ha-{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count())
        self._slots = asyncio.Semaphore(64)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.acked: set[str] = set()
        self.failed: set[str] = set()
        self.statuses: Counter[int] = Counter()

    async def _send(self, url: str, message_id: str) -> None:
        event = {"type": "track", "event": "HA", "userId": "u", "messageId": message_id}
        try:
            response = await self._http.post(f"{url}/v1/track", json=event, headers=basic_auth(self._key))
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        finally:
            self._slots.release()
        self.statuses[status] += 1
        (self.acked if 200 <= status < 300 else self.failed).add(message_id)

    async def _tick(self) -> None:
        interval, due = 1 / self._rate, time.monotonic()
        for n in itertools.count():
            await self._slots.acquire()
            task = asyncio.create_task(self._send(self._urls[n % len(self._urls)], next(self._ids)))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick())

    async def acked_more(self, count: int, timeout: float = 90) -> None:
        """Wait until `count` more requests than now got a 2xx."""
        target = len(self.acked) + count

        async def acked() -> int:
            return len(self.acked)

        await eventually(acked, lambda n: n >= target, timeout=timeout, interval=0.2)

    async def stop(self) -> None:
        assert self._ticker is not None
        self._ticker.cancel()
        await asyncio.gather(self._ticker, return_exceptions=True)
        await asyncio.gather(*self._in_flight)


PASSWORDS = {role: f"{role}-{uuid.uuid4().hex}" for role in ROLES}


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    """The nodes' TLS certificate (self-signed: it is its own CA)."""
    return self_signed(tmp_path)


def login(role: str, certificate: Certificate) -> list[str]:
    """The flags a role (or command) logs in to the cluster with, as its user, over TLS."""
    return ["--nats-user", role, "--nats-password", PASSWORDS[role], "--nats-tls-ca", certificate.cert]


def auth(role: str, certificate: Certificate) -> NatsAuth:
    return NatsAuth(user=role, password=PASSWORDS[role], tls_ca=certificate.cert)


@pytest.fixture
def cluster(tmp_path: Path, certificate: Certificate) -> Iterator[NatsCluster]:
    """The shipped config's cluster: users per role (nats-auth.conf) and TLS on the client port."""
    environment = {f"NATS_{role.upper()}_PASSWORD": password for role, password in PASSWORDS.items()}
    environment |= {"NATS_TLS_CERT": certificate.cert, "NATS_TLS_KEY": certificate.key}
    nats = NatsCluster(tmp_path / "nats", NATS_CONFIG, environment=environment)
    nats.start()
    yield nats
    nats.stop()


async def ensure_replicated_streams(
    cluster: NatsCluster, js: JetStreamContext, certificate: Certificate
) -> None:
    """`headwater streams ensure --replicas 3`, as docs/deploy.md has the operator run it before any
    role starts (roles create only what is missing, with one replica)."""
    command = [str(BIN / "headwater"), "streams", "ensure", "--replicas", "3", "--nats-url", cluster.urls]
    command += login("admin", certificate)
    result = await asyncio.to_thread(
        subprocess.run, [*command, "--yes"], capture_output=True, text=True, env=cli_env(), timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for stream in (
        EVENTS_STREAM,
        DLQ_STREAM,
        AUDIT_STREAM,
        f"KV_{PROJECTS_BUCKET}",
        f"KV_{IDEMPOTENCY_BUCKET}",
    ):
        info = await js.stream_info(stream)
        assert info.config.num_replicas == 3 and info.cluster is not None, stream


async def headwater(*args: str, timeout: float = 180) -> str:
    result = await asyncio.to_thread(
        subprocess.run,
        [str(BIN / "headwater"), *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=timeout,
    )
    assert result.returncode == 0, f"headwater {args[0]}: {result.stdout}{result.stderr}"
    return result.stdout


async def backlog(js: JetStreamContext) -> tuple[int, int]:
    """(not yet delivered, delivered but not acknowledged) of the durable consumer."""
    try:
        info = await js.consumer_info(EVENTS_STREAM, DURABLE, timeout=5)
    except (NatsError, TimeoutError):
        return (-1, -1)
    return (info.num_pending or 0, info.num_ack_pending or 0)


async def spool_entries(http: httpx.AsyncClient, edge_url: str) -> int:
    response = await http.get(f"{edge_url}/readyz")  # the details are there even when not ready
    return int(response.json()["spool"]["entries"])


async def copies_per_event(clickhouse_url: str, project_id: str, final: bool) -> dict[str, int]:
    """messageId → rows, as queries see them (FINAL) or as stored (physical rows, before
    ReplacingMergeTree collapses them), read by `headwater query` once the consumer that owned the
    directory has exited."""
    sql = f"SELECT message_id, count() FROM events {'FINAL' if final else ''} GROUP BY message_id"
    out = await headwater("query", "--clickhouse-url", clickhouse_url, "--project", project_id, sql)
    rows = [line.split("\t") for line in out.splitlines() if line]
    return {message_id: int(copies) for message_id, copies in rows}


async def leader_of(js: JetStreamContext, stream: str = EVENTS_STREAM, other_than: str = "") -> str:
    """The stream's leader (one that is not `other_than`, a node just killed), asked again while the
    test's own connection moves off a killed node or the stream is between leaders."""

    async def ask() -> str | None:
        try:
            return await stream_leader(js, stream)
        except (NatsError, TimeoutError):
            return None

    elected = await eventually(ask, lambda name: bool(name) and name != other_than, timeout=60, interval=0.5)
    return str(elected)


def other_than(cluster: NatsCluster, leader: str) -> str:
    return next(name for name in cluster.names if name != leader)


async def test_nats_nodes_die_under_load_and_every_acknowledged_event_lands_once(
    cluster: NatsCluster, tmp_path: Path, http: httpx.AsyncClient, certificate: Certificate
) -> None:
    started = time.monotonic()
    timings: list[str] = []

    def mark(what: str) -> None:
        timings.append(f"{time.monotonic() - started:6.1f}s {what}")

    client: NatsClient = await connect_nats(cluster.urls, "ha-test", auth=auth("admin", certificate))
    js = client.jetstream()
    roles: list[Role] = []
    try:
        await ensure_replicated_streams(cluster, js, certificate)
        mark("cluster up; `headwater streams ensure --replicas 3` applied")
        logs = tmp_path / "logs"
        logs.mkdir()
        nats = ["--nats-url", cluster.urls]
        control = Role(
            "control",
            [
                "control",
                *nats,
                *login("control", certificate),
                "--clickhouse-url",
                f"chdb://{tmp_path / 'ch-control'}",
            ],
            logs,
            {"HEADWATER_ADMIN_TOKEN": ADMIN_TOKEN},
        )
        roles.append(control)
        await asyncio.to_thread(control.start)
        project_id = f"ha{uuid.uuid4().hex[:8]}"
        created = await http.post(
            f"{control.url}/v1/projects", json={"id": project_id}, headers=admin_headers()
        )
        assert created.status_code == 201, created.text
        key = created.json()["secret_key"]

        # Each consumer owns its embedded ClickHouse directory: create the project's database in
        # each, as an operator runs `headwater migrate` against a new ClickHouse.
        consumer_urls = [f"chdb://{tmp_path / f'ch-consumer-{n}'}" for n in (1, 2)]
        await asyncio.gather(
            *(
                headwater("migrate", *nats, *login("admin", certificate), "--clickhouse-url", url)
                for url in consumer_urls
            )
        )
        edges = [
            Role(f"edge-{n}", ["edge", *nats, *login("edge", certificate),
                               "--spool-dir", str(tmp_path / f"spool-{n}"), "--publish-timeout", "1"], logs)
            for n in (1, 2)
        ]  # fmt: skip
        # A short ack wait: what a dying node held unacknowledged comes back soon.
        consumers = [
            Role(
                f"consumer-{n}",
                [
                    "consumer",
                    *nats,
                    *login("consumer", certificate),
                    "--clickhouse-url",
                    url,
                    "--ack-wait",
                    "10",
                ],
                logs,
            )
            for n, url in enumerate(consumer_urls, 1)
        ]
        roles += edges + consumers
        await asyncio.gather(*(asyncio.to_thread(role.start) for role in edges + consumers))
        for role in edges + consumers:
            await eventually(
                lambda role=role: http.get(f"{role.url}/readyz"),
                lambda r: r.status_code == 200,
                timeout=60,
                interval=0.3,
            )
        mark("control, 2 edges, 2 consumers ready")

        load = SteadyLoad(http, [edge.url for edge in edges], key)
        load.start()
        # Each phase lasts until the edges have answered that many more requests with a 2xx (at
        # 150 requests/s: about the seconds it lasted before); a phase that never gets there fails.
        await load.acked_more(450)
        follower = other_than(cluster, await leader_of(js))
        await asyncio.to_thread(cluster.kill, follower)
        mark(f"killed {follower} (not the HW_EVENTS leader)")
        await load.acked_more(600)
        await asyncio.to_thread(cluster.restart, follower)
        mark(f"{follower} restarted and current")
        await load.acked_more(300)
        leader = await leader_of(js)
        await asyncio.to_thread(cluster.kill, leader)
        mark(f"killed {leader} (the HW_EVENTS leader)")
        new_leader = await leader_of(js, other_than=leader)
        mark(f"HW_EVENTS leader now {new_leader}")
        await load.acked_more(600)  # through the election (the edges spool) and after it
        await asyncio.to_thread(cluster.restart, leader)
        mark(f"{leader} restarted and current; HW_EVENTS leader now {await leader_of(js)}")
        await load.acked_more(450)
        await load.stop()
        mark(f"load stopped: {len(load.acked)} acknowledged, statuses {dict(load.statuses)}")

        spooled = []
        for edge in edges:
            details = (await http.get(f"{edge.operator_url}/readyz")).json()["spool"]
            spooled.append(details["appended"])
            await eventually(
                lambda e=edge: spool_entries(http, e.operator_url), lambda n: n == 0, timeout=120
            )
        await eventually(lambda: backlog(js), lambda b: b == (0, 0), timeout=180, interval=0.5)
        mark(f"spools drained ({spooled} envelopes spooled) and the consumers caught up")
        dead = (await js.stream_info(DLQ_STREAM)).state.messages
        assert dead == 0, f"{dead} messages were dead-lettered"
        in_stream = (await js.stream_info(EVENTS_STREAM)).state.messages

        # Consumers first: each writes and acks what it holds; a non-zero exit is a role that died.
        for role in [*consumers, *edges, control]:
            assert await asyncio.to_thread(role.stop) == 0, f"{role.name}:\n{role.log_tail()}"
        stored = await asyncio.gather(*(copies_per_event(url, project_id, True) for url in consumer_urls))
        physical = await asyncio.gather(*(copies_per_event(url, project_id, False) for url in consumer_urls))
        mark("consumers stopped, their databases read")
    finally:
        for role in roles:
            await asyncio.to_thread(role.stop)
        await client.close()

    assert load.acked, f"no request got a 2xx: {dict(load.statuses)}"
    union = set(stored[0]) | set(stored[1])
    missing = load.acked - union
    assert not missing, f"{len(missing)} acknowledged events are missing, e.g. {sorted(missing)[:5]}"
    for n, copies in enumerate(stored, 1):
        doubled = [m for m, c in copies.items() if c != 1]
        assert not doubled, f"consumer-{n}'s database shows {len(doubled)} events twice after FINAL"
    # Anything stored beyond the acknowledged came from a request that got an error (the client
    # was told to retry it): one event per request, so it is whole.
    assert union - load.acked <= load.failed
    # JetStream kept one message per event: a publish repeated (the edge's timeout, then its spool's
    # drain, across the leader's election) was dropped on its Nats-Msg-Id. So every physical row
    # beyond one per event is a message redelivered after its ack was lost with a dying node.
    assert in_stream == len(union), f"HW_EVENTS holds {in_stream} messages for {len(union)} events"
    repeats = [sum(rows.values()) - len(rows) for rows in physical]
    in_both = set(stored[0]) & set(stored[1])
    print("\n" + "\n".join(timings))
    print(
        f"HA: {sum(load.statuses.values())} sent, {len(load.acked)} acknowledged, "
        f"{len(union)} stored, {in_stream} in HW_EVENTS; consumer-1 {len(stored[0])} after FINAL, "
        f"{sum(physical[0].values())} physical rows ({repeats[0]} repeats); consumer-2 {len(stored[1])} "
        f"after FINAL, {sum(physical[1].values())} physical rows ({repeats[1]} repeats); "
        f"{len(in_both)} in both databases (redelivered across processes), 0 missing, 0 doubled"
    )


async def test_the_shipped_cluster_wants_a_login_over_tls_and_keeps_edges_to_their_part(
    cluster: NatsCluster, certificate: Certificate
) -> None:
    with pytest.raises((NatsError, OSError)):  # no credentials
        await nats.connect(
            cluster.urls, allow_reconnect=False, tls=ssl.create_default_context(cafile=certificate.cert)
        )
    with pytest.raises((NatsError, OSError)):  # credentials, but in clear text
        await nats.connect(cluster.urls, allow_reconnect=False, user="edge", password=PASSWORDS["edge"])
    edge = await connect_nats(cluster.urls, "ha-test-edge", auth=auth("edge", certificate))
    admin = await connect_nats(cluster.urls, "ha-test-admin", auth=auth("admin", certificate))
    try:
        # (Set-up, not under test: a new cluster under CI's load once took over the default 5 s.)
        await admin.jetstream(timeout=30).create_key_value(bucket=PROJECTS_BUCKET)
        kv = await edge.jetstream(timeout=3).key_value(PROJECTS_BUCKET)
        with pytest.raises((NatsError, TimeoutError)):
            await asyncio.wait_for(kv.put("victim", b"{}"), 5)
    finally:
        await edge.close()
        await admin.close()
