"""End-to-end capacity of one node: the whole pipeline (edges → NATS → consumer → ClickHouse), driven
to saturation by wrk, with nginx / bare ASGI / bare Quart baselines measured in the same run.
Run it as `bench/run` (see bench/README.md); `bench/run --quick` is the CI smoke run.

Scenarios (requests prepared in advance, replayed by wrk with bench/wrk/requests.lua):
- browser: 1-20 events per request (40% single), three projects, public keys from allowed origins
  (half as Basic auth + JSON, half as sendBeacon-style text/plain with `writeKey`), ~3,000 real
  user agents (Zipf) and client addresses in X-Forwarded-For (the edge trusts 127.0.0.1);
- server: batches of 100 events with a secret key (`context.ip` and `context.userAgent` set);
- single: one track event per request.

Per scenario: events/s and requests/s at saturation; p50/p95/p99 request latency and end-to-end
freshness (edge receive → rows accepted by ClickHouse, the consumer's histogram) at 50% and 80% of
saturation (wrk paced with `delay()`); CPU seconds per 1,000 events for each role (edge workers,
nats-server, the consumer's Python threads and the embedded ClickHouse's own threads, told apart
by thread name); peak memory per process; non-2xx and socket errors, which must be 0. Every run
ends by waiting until the consumer has drained the stream (nothing pending, nothing unacked, no
dead letters): the figure "end to end" is events / (load time + drain time).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
from consumer import client_addresses, user_agents
from docsection import DOC, replace_section
from nats.js.errors import NotFoundError
from prometheus_client.parser import text_string_to_metric_families

from edge import (
    HEADWATER_READY,
    BenchError,
    Server,
    child_pids,
    clean_env,
    cpu_seconds,
    free_port,
    headwater_command,
    machine,
    parse_wrk,
    revision,
    start_baseline,
    stopped_on_error,
    wait_edge_ready,
    wrk_path,
)
from headwater.core.wire.subjects import DLQ_STREAM, EVENTS_STREAM
from headwater.edge.streams import StreamSettings, ensure_streams
from headwater.ops.natsserver import NatsServerProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEGIN = "<!-- bench/run: generated section begins -->"
END = "<!-- bench/run: generated section ends -->"
PROJECTS = ("shop", "docs", "app")
GOAL_EVENTS_PER_SECOND = 17_000
CONNECTIONS, THREADS = 64, 2
DURABLE = "hw-clickhouse"


# ---------------------------------------------------------------------------------------------------
# Workloads


@dataclass(frozen=True)
class Keys:
    public: dict[str, str]
    secret: dict[str, str]


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def _event(rng: random.Random, kind: str) -> dict[str, Any]:
    path = rng.choice(["/", "/pricing", "/docs/start", "/blog/why", "/products/merino", "/cart"])
    event: dict[str, Any] = {
        "type": kind,
        "anonymousId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "timestamp": "2026-11-28T07:00:00.000Z",
        "context": {
            "library": {"name": "headwater.js", "version": "1.0.0"},
            "locale": "en-US",
            "page": {"path": path, "url": f"https://www.example.com{path}", "referrer": "", "title": path},
        },
    }
    if kind == "track":
        event["event"] = rng.choice(["Product Viewed", "Product Added", "Signed Up", "Search"])
        event["properties"] = {"product_id": f"P-{rng.randint(1, 5000)}", "price": 19.9, "currency": "EUR"}
    elif kind == "page":
        event["name"] = path
        event["properties"] = {"path": path, "url": f"https://www.example.com{path}"}
    return event


def browser_requests(rng: random.Random, keys: Keys, count: int) -> list[dict[str, Any]]:
    agents, addresses = user_agents(rng, 3000), client_addresses(rng, 20_000)
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(agents))]
    out = []
    for n in range(count):
        project = PROJECTS[n % len(PROJECTS)]
        size = 1 if rng.random() < 0.4 else rng.randint(2, 20)
        events = [_event(rng, rng.choice(["page", "track", "track"])) for _ in range(size)]
        headers = {
            "Origin": f"https://www.{project}.example",
            "User-Agent": rng.choices(agents, weights)[0],
            "X-Forwarded-For": rng.choice(addresses),
        }
        if size == 1:
            path, body = f"/v1/{events[0]['type']}", events[0]
        else:
            path, body = "/v1/batch", {"batch": events, "sentAt": "2026-11-28T07:00:00.100Z"}
        if n % 2:
            headers["Content-Type"] = "text/plain"  # what sendBeacon sends: no preflight
            body = {**body, "writeKey": keys.public[project]}
        else:
            headers["Content-Type"] = "application/json"
            headers["Authorization"] = _basic(keys.public[project])
        out.append({"path": path, "headers": headers, "body": json.dumps(body), "events": size})
    return out


def server_requests(rng: random.Random, keys: Keys, count: int) -> list[dict[str, Any]]:
    agents, addresses = user_agents(rng, 500), client_addresses(rng, 5000)
    out = []
    for n in range(count):
        project = PROJECTS[n % len(PROJECTS)]
        events = []
        for _ in range(100):
            event = _event(rng, "track")
            event["userId"] = f"u{rng.randint(1, 10**6)}"
            event["context"].update(ip=rng.choice(addresses), userAgent=rng.choice(agents))
            events.append(event)
        headers = {"Content-Type": "application/json", "Authorization": _basic(keys.secret[project])}
        out.append(
            {"path": "/v1/batch", "headers": headers, "body": json.dumps({"batch": events}), "events": 100}
        )
    return out


def single_requests(rng: random.Random, keys: Keys, count: int) -> list[dict[str, Any]]:
    out = []
    for n in range(count):
        project = PROJECTS[n % len(PROJECTS)]
        headers = {
            "Content-Type": "application/json",
            "Authorization": _basic(keys.public[project]),
            "Origin": f"https://www.{project}.example",
            "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126",
        }
        out.append(
            {"path": "/v1/track", "headers": headers, "body": json.dumps(_event(rng, "track")), "events": 1}
        )
    return out


SCENARIOS = {"browser": browser_requests, "server": server_requests, "single": single_requests}
SCENARIO_SIZES = {"browser": 600, "server": 60, "single": 600}


def _lua_string(text: str) -> str:
    level = "=" * 4
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


def write_lua(requests: list[dict[str, Any]], path: Path) -> float:
    """The requests as a Lua table for requests.lua; returns the mean events per request."""
    lines = ["return {"]
    for r in requests:
        headers = ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in r["headers"].items())
        lines.append(
            f"{{path = {_lua_string(r['path'])}, headers = {{{headers}}}, body = {_lua_string(r['body'])}}},"
        )
    lines.append("}")
    path.write_text("\n".join(lines))
    return sum(r["events"] for r in requests) / len(requests)


# ---------------------------------------------------------------------------------------------------
# Processes


def split_cpu(pid: int) -> tuple[float, float]:
    """(Python threads, embedded ClickHouse threads) CPU seconds of a consumer process. ClickHouse
    names its threads (QueryPipelineEx, BgSchPool, MergeMutate, ...); Python's keep the process name."""
    main_name = Path(f"/proc/{pid}/comm").read_text().strip()
    python = engine = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            seconds = cpu_seconds(pid, int(task.name))
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        if name == main_name or name.startswith(("asyncio", "python")):
            python += seconds
        else:
            engine += seconds
    return python, engine


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Node:
    """One node's stack as separate processes: nats-server, W edge workers, C consumers."""

    work: Path
    edge_workers: int
    consumers: int
    nats: NatsServerProcess = field(init=False)
    edge: Server = field(init=False)
    consumer_servers: list[Server] = field(default_factory=list)
    keys: Keys = field(init=False)

    def start(self, stack: ExitStack) -> None:
        self.nats = NatsServerProcess(self.work / "nats", port=0)
        self.nats.start()
        stack.callback(self.nats.stop)
        asyncio.run(_ensure_streams(self.nats.url))
        self.keys = create_projects(self.nats.url, self.work)
        for index in range(self.consumers):
            self.consumer_servers.append(start_consumer(self.nats.url, self.work, index))
            stack.callback(self.consumer_servers[-1].stop)
        self.edge = start_edge(self.edge_workers, self.nats.url, self.work)
        stack.callback(self.edge.stop)

    @property
    def nats_pid(self) -> int:
        assert self.nats.pid is not None
        return self.nats.pid

    def consumer_metrics(self) -> dict[str, float]:
        """Sum over consumers: rows written, and the freshness histogram's buckets."""
        totals: dict[str, float] = {}
        for server in self.consumer_servers:
            text = httpx.get(f"{server.url}/metrics", timeout=10).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "headwater_consumer_rows_total":
                        totals["rows"] = totals.get("rows", 0.0) + sample.value
                    elif sample.name == "headwater_consumer_freshness_seconds_bucket":
                        key = f"le={sample.labels['le']}"
                        totals[key] = totals.get(key, 0.0) + sample.value
                    elif sample.name == "headwater_consumer_insert_retries_total":
                        totals["retries"] = totals.get("retries", 0.0) + sample.value
        return totals


async def _ensure_streams(url: str) -> None:
    client = await nats.connect(url)
    try:
        await ensure_streams(client.jetstream(), StreamSettings())
    finally:
        await client.close()


def create_projects(nats_url: str, work: Path) -> Keys:
    """Three projects through a control plane that runs only for this (on consumer 0's ClickHouse)."""
    token = base64.b64encode(os.urandom(18)).decode()
    control = Server("control", 1, free_port(), work)
    control.spawn(
        [*headwater_command(), "serve", "control", "--host", "127.0.0.1", "--port", str(control.port),
         "--nats-url", nats_url, "--clickhouse-url", f"chdb://{work / 'clickhouse-0'}",
         "--log-level", "warning"],
        clean_env(HEADWATER_ADMIN_TOKEN=token),
    )  # fmt: skip
    public, secret = {}, {}
    try:
        control.wait_ready(HEADWATER_READY, timeout=120)
        for project in PROJECTS:
            response = httpx.post(
                f"{control.url}/v1/projects",
                json={"id": project, "name": project, "allowed_origins": [f"https://www.{project}.example"]},
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
            if response.status_code != 201:
                raise BenchError(f"creating project {project} failed: {response.status_code} {response.text}")
            public[project], secret[project] = response.json()["public_key"], response.json()["secret_key"]
    finally:
        control.stop()
    return Keys(public, secret)


def start_consumer(nats_url: str, work: Path, index: int) -> Server:
    """A consumer on its own embedded ClickHouse directory (the engine admits one process per
    directory; against a ClickHouse server all consumers would share one)."""
    clickhouse = f"chdb://{work / f'clickhouse-{index}'}"
    if index > 0:  # the control plane migrated directory 0 when it created the projects
        subprocess.run(
            [*headwater_command(), "migrate", "--nats-url", nats_url, "--clickhouse-url", clickhouse],
            check=True, capture_output=True, env=clean_env(), timeout=300,
        )  # fmt: skip
    server = Server(f"consumer{index}", 1, free_port(), work)
    server.spawn(
        [*headwater_command(), "serve", "consumer", "--host", "127.0.0.1", "--port", str(server.port),
         "--nats-url", nats_url, "--clickhouse-url", clickhouse, "--log-level", "warning"],
        clean_env(),
    )  # fmt: skip
    with stopped_on_error(server):
        server.wait_ready(HEADWATER_READY, timeout=120)
    return server


def start_edge(workers: int, nats_url: str, work: Path) -> Server:
    server = Server("edge", workers, free_port(), work)
    server.spawn(
        [*headwater_command(), "serve", "edge", "--host", "127.0.0.1", "--port", str(server.port),
         "--operator-port", "0",
         "--workers", str(workers), "--nats-url", nats_url, "--trusted-proxies", "127.0.0.1",
         "--spool-dir", str(work / "spool"), "--log-level", "warning"],
        clean_env(),
    )  # fmt: skip
    with stopped_on_error(server):
        wait_edge_ready(server, timeout=60)
    return server


def start_nginx(workers: int, work: Path) -> Server | None:
    """Debian's nginx answering 204 to everything: the physical limit of an HTTP request here."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        return None
    server = Server("nginx", workers, free_port(), work)
    prefix = work / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"worker_processes {workers};\ndaemon off;\nmaster_process on;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/logs/error.log warn;\nevents {{ worker_connections 1024; }}\n"
        f"http {{ access_log off; client_body_temp_path {prefix}/body;\n"
        f"  server {{ listen 127.0.0.1:{server.port} reuseport; location / {{ return 204; }} }} }}\n"
    )
    server.spawn([binary, "-c", str(conf), "-p", str(prefix)], clean_env())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.post(server.url + "/v1/track", content=b"{}", timeout=2).status_code == 204:
                children = Path(f"/proc/{server.processes[0].pid}/task/{server.processes[0].pid}/children")
                server.worker_pids = [server.processes[0].pid] + [
                    int(p) for p in children.read_text().split()
                ]
                return server
        except httpx.HTTPError:
            time.sleep(0.05)
    server.stop()
    raise BenchError(f"nginx did not start: {(prefix / 'logs' / 'error.log').read_text()[-2000:]}")


async def _drained(nats_url: str) -> tuple[int, int, int]:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        info = await js.consumer_info(EVENTS_STREAM, DURABLE)
        try:
            dead = (await js.stream_info(DLQ_STREAM)).state.messages
        except NotFoundError:
            dead = 0
        return int(info.num_pending or 0), int(info.num_ack_pending or 0), int(dead)
    finally:
        await client.close()


def spooled_entries(node: Node) -> int:
    """Envelopes the edges hold in their disk spools (JetStream answered too slowly for them)."""
    result = subprocess.run(
        [*headwater_command(), "spool", "status", "--json", "--spool-dir", str(node.work / "spool")],
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return 0  # no spool directory yet: nothing spooled
    return sum(int(entry["entries"]) for entry in json.loads(result.stdout))


def wait_drained(node: Node, timeout: float = 600) -> float:
    """Seconds until the edges' spools are empty and the consumers have processed and acknowledged
    everything in the stream."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        pending, unacked, dead = asyncio.run(_drained(node.nats.url))
        if dead:
            raise BenchError(f"{dead} messages were dead-lettered: see `headwater dlq list`")
        if pending == 0 and unacked == 0 and spooled_entries(node) == 0:
            return time.monotonic() - started
        time.sleep(0.1)
    raise BenchError(f"the consumers did not drain the stream within {timeout:.0f} s")


# ---------------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Load:
    requests_per_second: float
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    latency_ms: tuple[float, float, float]  # p50, p95, p99


def run_wrk(url: str, lua_requests: Path, seconds: int, delay_ms: float | None = None) -> Load:
    env = clean_env(HW_BENCH_REQUESTS=str(lua_requests))
    if delay_ms:
        env["HW_BENCH_DELAY_MS"] = f"{delay_ms:.3f}"
    command = [wrk_path(), "-t", str(THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds}s", "--latency",
               "--timeout", "10s", "-s", str(HERE / "wrk" / "requests.lua"), url]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    parsed = parse_wrk(result.stdout)
    match = re.search(r"HW_LATENCY_US (\d+) (\d+) (\d+)", result.stdout)
    latency = tuple(int(v) / 1000 for v in match.groups()) if match else (parsed.p50_ms, 0.0, parsed.p99_ms)
    return Load(
        parsed.requests_per_second, parsed.requests, parsed.seconds, parsed.non_2xx, parsed.socket_errors,
        (latency[0], latency[1], latency[2]),
    )  # fmt: skip


def freshness_quantiles(before: dict[str, float], after: dict[str, float]) -> tuple[float, float] | None:
    """p50 and p99 of the freshness histogram's observations between two scrapes (interpolated)."""
    buckets = sorted(
        (float(k[3:]), after[k] - before.get(k, 0.0)) for k in after if k.startswith("le=") and k != "le=+Inf"
    )
    total = after.get("le=+Inf", 0.0) - before.get("le=+Inf", 0.0)
    if total <= 0:
        return None

    def quantile(q: float) -> float:
        rank, lower, below = q * total, 0.0, 0.0
        for bound, count in buckets:
            if count >= rank:
                share = (rank - below) / (count - below) if count > below else 1.0
                return lower + (bound - lower) * share
            lower, below = bound, count
        return float("inf")

    return quantile(0.5), quantile(0.99)


@dataclass
class Measurement:
    scenario: str
    edge_workers: int
    consumers: int
    load_percent: int | None  # None: saturation
    load: Load
    events: float  # rows the consumers wrote for this run
    drain_seconds: float
    cpu: dict[str, float]  # role -> seconds
    freshness: tuple[float, float] | None
    spooled: int = 0  # envelopes in the edges' spools when the load ended

    @property
    def events_per_second(self) -> float:
        return self.events / self.load.seconds

    @property
    def end_to_end_per_second(self) -> float:
        return self.events / (self.load.seconds + self.drain_seconds)

    @property
    def clean(self) -> bool:
        return self.load.non_2xx == 0 and self.load.socket_errors == 0

    def cpu_per_thousand(self, role: str) -> float:
        return self.cpu[role] / self.events * 1000 if self.events else 0.0


def cpu_snapshot(node: Node) -> dict[str, float]:
    python = engine = 0.0
    for server in node.consumer_servers:
        p, e = split_cpu(server.worker_pids[0])
        # the consumer's worker processes (decode, enrich, encode) are its Python too
        workers = sum(cpu_seconds(pid) for pid in child_pids(server.worker_pids[0]))
        python, engine = python + p + workers, engine + e
    edge = sum(cpu_seconds(pid) for pid in node.edge.worker_pids)
    return {"edge": edge, "nats": cpu_seconds(node.nats_pid), "consumer": python, "clickhouse": engine}


def measure(
    node: Node, scenario: str, lua: Path, seconds: int, delay_ms: float | None, percent: int | None
) -> Measurement:
    metrics_before, cpu_before = node.consumer_metrics(), cpu_snapshot(node)
    load = run_wrk(node.edge.url, lua, seconds, delay_ms)
    spooled = spooled_entries(node)
    drain = wait_drained(node)
    metrics_after, cpu_after = node.consumer_metrics(), cpu_snapshot(node)
    return Measurement(
        scenario, node.edge_workers, node.consumers, percent, load,
        metrics_after.get("rows", 0.0) - metrics_before.get("rows", 0.0), drain,
        {role: cpu_after[role] - cpu_before[role] for role in cpu_after},
        freshness_quantiles(metrics_before, metrics_after), spooled,
    )  # fmt: skip


def paced_delay_ms(node: Node, lua: Path, target_requests_per_second: float) -> float:
    """How long each connection waits before a request so that together they send about `target`
    requests/s. A request's own latency adds to the wait, so a 2 s calibration run measures it and
    the wait is shortened by it."""
    cycle_ms = CONNECTIONS / target_requests_per_second * 1000
    trial = run_wrk(node.edge.url, lua, 2, cycle_ms)
    latency_ms = CONNECTIONS / max(trial.requests_per_second, 1e-9) * 1000 - cycle_ms
    wait_drained(node)
    return max(cycle_ms - max(latency_ms, 0.0), 0.1)


def progress(m: Measurement) -> None:
    at = "saturation" if m.load_percent is None else f"{m.load_percent}% of it"
    fresh = f"  freshness p50/p99 {m.freshness[0]:.2f}/{m.freshness[1]:.2f} s" if m.freshness else ""
    print(
        f"  {m.scenario:<8} W={m.edge_workers} C={m.consumers} {at:<11}"
        f" {m.load.requests_per_second:>8,.0f} req/s"
        f" {m.events_per_second:>9,.0f} ev/s (end to end {m.end_to_end_per_second:,.0f})"
        f"  p50/p95/p99 {m.load.latency_ms[0]:.1f}/{m.load.latency_ms[1]:.1f}/{m.load.latency_ms[2]:.1f} ms"
        f"{fresh}  errors {m.load.non_2xx + m.load.socket_errors}  spooled {m.spooled}",
        flush=True,
    )


@contextmanager
def node_running(work: Path, edge_workers: int, consumers: int) -> Iterator[Node]:
    with ExitStack() as stack:
        node = Node(work, edge_workers, consumers)
        node.start(stack)
        yield node


def peak_memory(node: Node) -> dict[str, float]:
    return {
        "edge worker": max(peak_rss_mb(pid) for pid in node.edge.worker_pids),
        "nats-server": peak_rss_mb(node.nats_pid),
        "consumer (with its ClickHouse)": max(peak_rss_mb(s.worker_pids[0]) for s in node.consumer_servers),
        "consumer worker process": max(
            (peak_rss_mb(pid) for s in node.consumer_servers for pid in child_pids(s.worker_pids[0])),
            default=0.0,
        ),
    }


def profile(pid: int, seconds: int, out: Path) -> list[tuple[float, str]]:
    """py-spy's view of where a process spends its time: top functions by own samples."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return []
    subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(seconds), "--format", "raw",
                    "--rate", "200", "-o", str(out), "--nonblocking"],
                   capture_output=True, check=False)  # fmt: skip
    own: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines() if out.exists() else []:
        stack, _, count = line.rpartition(" ")
        frame = stack.rsplit(";", 1)[-1]
        name = re.sub(r" \((?:.*/)?([^/]+:\d+)\)$", r" (\1)", frame)
        own[name] = own.get(name, 0) + int(count)
        total += int(count)
    return sorted(((n / total * 100, f) for f, n in own.items()), reverse=True)[:8] if total else []


# ---------------------------------------------------------------------------------------------------
# The run


@dataclass
class Options:
    seconds: int
    quick: bool
    scaling: bool
    edge_workers: int
    profile_seconds: int


@dataclass
class Results:
    measurements: list[Measurement] = field(default_factory=list)
    baselines: dict[str, Load] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    mean_events: dict[str, float] = field(default_factory=dict)

    def find(
        self, scenario: str, percent: int | None, workers: int, consumers: int = 1
    ) -> Measurement | None:
        for m in self.measurements:
            if (m.scenario, m.load_percent, m.edge_workers, m.consumers) == (
                scenario,
                percent,
                workers,
                consumers,
            ):
                return m
        return None


def prepare(node: Node, work: Path, seed: int, results: Results) -> dict[str, Path]:
    luas = {}
    for scenario, make in SCENARIOS.items():
        path = work / f"{scenario}-w{node.edge_workers}-c{node.consumers}.lua"
        requests = make(random.Random(seed), node.keys, SCENARIO_SIZES[scenario])  # noqa: S311 -- reproducible load
        results.mean_events[scenario] = write_lua(requests, path)
        luas[scenario] = path
    return luas


def profiled_saturation(node: Node, lua: Path, options: Options, work: Path, results: Results) -> Measurement:
    """A browser saturation run with py-spy on one edge worker and the consumer meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        run = pool.submit(measure, node, "browser", lua, options.seconds, None, None)
        time.sleep(1)
        seconds = max(2, min(options.profile_seconds, options.seconds - 2))
        edge = pool.submit(profile, node.edge.worker_pids[0], seconds, work / "edge.pyspy")
        consumer = pool.submit(
            profile, node.consumer_servers[0].worker_pids[0], seconds, work / "consumer.pyspy"
        )
        results.profiles = {"edge worker": edge.result(), "consumer": consumer.result()}
        return run.result()


def run(options: Options, work: Path, seed: int = 11) -> Results:
    results = Results()
    workers = options.edge_workers
    print(f"reference node: {workers} edge worker(s), 1 consumer", flush=True)
    with node_running(work / "reference", workers, 1) as node:
        luas = prepare(node, work, seed, results)
        if not options.quick:
            run_wrk(node.edge.url, luas["browser"], 3)  # warm-up: caches, JIT-free but cold imports
            wait_drained(node)
        for scenario in SCENARIOS:
            if scenario == "browser" and not options.quick and options.profile_seconds:
                saturation = profiled_saturation(node, luas[scenario], options, work, results)
            else:
                saturation = measure(node, scenario, luas[scenario], options.seconds, None, None)
            results.measurements.append(saturation)
            progress(saturation)
            percents = (50,) if options.quick else ((25, 50, 80) if scenario == "browser" else (50, 80))
            if options.quick and scenario != "browser":
                continue
            for percent in percents:
                rate = saturation.load.requests_per_second * percent / 100
                paced = measure(
                    node,
                    scenario,
                    luas[scenario],
                    options.seconds,
                    paced_delay_ms(node, luas[scenario], rate),
                    percent,
                )
                results.measurements.append(paced)
                progress(paced)
        results.memory = peak_memory(node)
        single = luas["single"]
    print("baselines (single-event requests, same wrk settings)", flush=True)
    for name in ("nginx", "asgi", "quart"):
        if options.quick and name == "quart":
            continue
        server = start_nginx(workers, work) if name == "nginx" else start_baseline(name, workers, work)
        if server is None:
            print("  nginx: not installed (apt-get install -y nginx); left out", flush=True)
            continue
        try:
            load = run_wrk(server.url, single, options.seconds)
        finally:
            server.stop()
        results.baselines[name] = load
        print(
            f"  {name:<8} {load.requests_per_second:>9,.0f} req/s  errors {load.non_2xx + load.socket_errors}"
        )
    if options.scaling and not options.quick:
        print("scaling: browser-like saturation by edge workers and consumers", flush=True)
        for edge_workers in (1, 2, 4):
            for consumers in (1, 2):
                if (edge_workers, consumers) == (workers, 1):
                    continue  # measured above
                with node_running(work / f"w{edge_workers}c{consumers}", edge_workers, consumers) as node:
                    luas = prepare(node, work, seed, results)
                    run_wrk(node.edge.url, luas["browser"], 2)
                    wait_drained(node)
                    m = measure(node, "browser", luas["browser"], options.seconds, None, None)
                    results.measurements.append(m)
                    progress(m)
    return results


# ---------------------------------------------------------------------------------------------------
# Report


def save(results: Results, path: Path) -> None:
    """Every measurement of the run, for other tools (and the plot) to read."""
    rows = [
        {
            "scenario": m.scenario,
            "edge_workers": m.edge_workers,
            "consumers": m.consumers,
            "load_percent": m.load_percent,
            "requests_per_second": m.load.requests_per_second,
            "events_per_second": m.events_per_second,
            "end_to_end_events_per_second": m.end_to_end_per_second,
            "latency_ms_p50_p95_p99": m.load.latency_ms,
            "freshness_s_p50_p99": m.freshness,
            "drain_seconds": m.drain_seconds,
            "cpu_seconds": m.cpu,
            "errors": m.load.non_2xx + m.load.socket_errors,
            "spooled_at_end_of_load": m.spooled,
        }
        for m in results.measurements
    ]
    baselines = {name: load.requests_per_second for name, load in results.baselines.items()}
    path.write_text(
        json.dumps({"measurements": rows, "baselines": baselines, "memory_mb": results.memory}, indent=1)
    )


def plot(results: Results, workers: int, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    points = [results.find("browser", p, workers) for p in (25, 50, 80, None)]
    points_ok = [m for m in points if m is not None]
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for index, label in ((0, "p50"), (2, "p99")):
        axis.plot(
            [m.events_per_second for m in points_ok],
            [m.load.latency_ms[index] for m in points_ok],
            "o-",
            label=label,
        )
    axis.set_xlabel("accepted events/s (browser-like traffic)")
    axis.set_ylabel("request latency (ms)")
    axis.set_yscale("log")
    axis.set_title(
        f"headwater on one 2-core box: {workers} edge workers, 1 consumer, NATS, embedded ClickHouse"
    )
    axis.title.set_fontsize(9)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def _fresh(m: Measurement | None) -> str:
    return f"{m.freshness[0]:.2f} / {m.freshness[1]:.2f}" if m and m.freshness else "—"


def _lat(m: Measurement | None) -> str:
    return " / ".join(f"{v:.1f}" for v in m.load.latency_ms) if m else "—"


def report(results: Results, options: Options, command: str, plotted: bool) -> str:
    w = options.edge_workers
    single_rps = results.find("single", None, w)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC at revision `{revision()}` with "
        f"`{command}` ({options.seconds} s of load per cell, wrk -c {CONNECTIONS} -t {THREADS}). Reference "
        f"node: {w} edge workers, 1 consumer, nats-server and the embedded ClickHouse, all on this machine:",
        "",
        "| | " + " | ".join(machine().keys()) + " |",
        "|---|" + "---|" * len(machine()),
        "| machine | " + " | ".join(machine().values()) + " |",
        "",
        "| scenario | events/request | saturation req/s | accepted events/s | end-to-end events/s | "
        "latency p50/p95/p99 ms at 50% | at 80% | freshness p50/p99 s at 50% | at 80% | errors | "
        "spooled at the end of saturation |",
        "|---|---:|---:|---:|---:|---|---|---|---|---:|---:|",
    ]
    for scenario in SCENARIOS:
        sat = results.find(scenario, None, w)
        if sat is None:
            continue
        half, most = results.find(scenario, 50, w), results.find(scenario, 80, w)
        errors = sum(
            m.load.non_2xx + m.load.socket_errors for m in results.measurements if m.scenario == scenario
        )
        lines.append(
            f"| {scenario} | {results.mean_events[scenario]:.1f} | {sat.load.requests_per_second:,.0f} | "
            f"{sat.events_per_second:,.0f} | {sat.end_to_end_per_second:,.0f} | "
            f"{_lat(half)} | {_lat(most)} | "
            f"{_fresh(half)} | {_fresh(most)} | {errors} | {sat.spooled:,} |"
        )
    lines += [
        "",
        "Baselines, same wrk settings, single-event requests, and headwater's single-event figure as a "
        "ratio:",
        "",
        "| target | req/s | headwater single ÷ target |",
        "|---|---:|---:|",
    ]
    for name, load in results.baselines.items():
        ratio = single_rps.load.requests_per_second / load.requests_per_second if single_rps else 0
        lines.append(f"| {name} (204) | {load.requests_per_second:,.0f} | {ratio:.2f} |")
    lines += [
        "",
        "CPU seconds per 1,000 events at saturation (the consumer's Python threads and the embedded "
        "ClickHouse's threads told apart by thread name), and peak memory:",
        "",
        "| scenario | edge | nats-server | consumer (Python) | ClickHouse (embedded) |",
        "|---|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        sat = results.find(scenario, None, w)
        if sat is not None:
            cells = " | ".join(
                f"{sat.cpu_per_thousand(r):.3f}" for r in ("edge", "nats", "consumer", "clickhouse")
            )
            lines.append(f"| {scenario} | {cells} |")
    lines += ["", " · ".join(f"{k}: {v:,.0f} MiB" for k, v in results.memory.items()), ""]
    scaling = [m for m in results.measurements if m.scenario == "browser" and m.load_percent is None]
    if len(scaling) > 1:
        lines += [
            "Scaling, browser-like traffic at saturation (a second consumer gets its own embedded ClickHouse "
            "directory: the stand-in for consumers sharing one ClickHouse server):",
            "",
            "| edge workers | consumers | accepted events/s | end-to-end events/s | drain after the load s | "
            "CPU s/1k events: edge / nats / consumer / ClickHouse |",
            "|---:|---:|---:|---:|---:|---|",
        ]
        for m in sorted(scaling, key=lambda m: (m.edge_workers, m.consumers)):
            cpu = " / ".join(
                f"{m.cpu_per_thousand(r):.3f}" for r in ("edge", "nats", "consumer", "clickhouse")
            )
            lines.append(
                f"| {m.edge_workers} | {m.consumers} | {m.events_per_second:,.0f} | "
                f"{m.end_to_end_per_second:,.0f} | {m.drain_seconds:.1f} | {cpu} |"
            )
        lines.append("")
    for role, top in results.profiles.items():
        if top:
            lines += [f"py-spy, {role} at browser saturation (own time, top functions):", ""]
            lines += [f"- {share:.1f}% `{name}`" for share, name in top]
            lines.append("")
    if plotted:
        lines += ["![throughput against latency](benchmarks-capacity.png)", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="seconds of load per cell")
    parser.add_argument("--edge-workers", type=int, default=2, help="edge workers of the reference node")
    parser.add_argument("--no-scaling", action="store_true", help="skip the edge-workers x consumers curve")
    parser.add_argument("--profile-seconds", type=int, default=6, help="py-spy time at saturation; 0: none")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 3 s cells, checks only, no doc")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench/run needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    options = Options(
        seconds=3 if args.quick else args.seconds,
        quick=args.quick,
        scaling=not args.no_scaling,
        edge_workers=1 if args.quick else args.edge_workers,
        profile_seconds=args.profile_seconds,
    )
    import tempfile

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hw-bench-run-") as work:
        try:
            results = run(options, Path(work))
        except BenchError as exc:
            print(f"bench/run: {exc}", file=sys.stderr)
            return 1
    unclean = [m for m in results.measurements if not m.clean]
    unclean_baselines = [n for n, b in results.baselines.items() if b.non_2xx or b.socket_errors]
    print(f"{len(results.measurements)} measurements in {time.monotonic() - started:.0f} s")
    if unclean or unclean_baselines:
        for m in unclean:
            print(f"NOT CLEAN: {m.scenario} {m.load_percent}: {m.load}", file=sys.stderr)
        for name in unclean_baselines:
            print(f"NOT CLEAN: baseline {name}: {results.baselines[name]}", file=sys.stderr)
        return 1
    if args.quick:
        print("quick: every request answered 2xx, every accepted event written, the stream drained")
        return 0
    save(results, DOC.parent / "benchmarks-capacity.json")
    plotted = plot(results, options.edge_workers, DOC.parent / "benchmarks-capacity.png")
    command = "bench/run " + " ".join(argv if argv is not None else sys.argv[1:])
    section = report(results, options, command.strip(), plotted)
    print(section)
    if not args.no_doc:
        replace_section(BEGIN, END, section, "## End-to-end capacity (`bench/run`)")
        print(f"updated {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
