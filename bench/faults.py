"""Fault drill: every fault the README promises to survive, against a real stack, counted.

Each scenario starts its own stack as production runs it — a nats-server, `headwater serve edge`,
`headwater serve consumer` (embedded ClickHouse), a control plane that creates the project — sends
events with unique messageIds through the edge while it injects one fault, clears it, waits until
the pipeline is idle, and counts:

- requests: HTTP requests sent; acknowledged: events answered 2xx (minus those the answer lists as
  refused);
- stored: acknowledged events found in ClickHouse; lost: acknowledged and not stored;
- doubled: events visible more than once (`FINAL`, as queries read them); repeats: extra raw rows
  ReplacingMergeTree collapses (a redelivery after a crash);
- dead-lettered: messages in HW_DLQ (a valid event there is lost until replayed).

    .venv/bin/python bench/faults.py                 # every scenario; rewrites docs/reliability.md
    .venv/bin/python bench/faults.py --quick         # short outages, no doc
    .venv/bin/python bench/faults.py --only nats-down --only bad-input

Scenarios that need a full disk mount a tmpfs (root only); without root they are reported skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats

sys.path.insert(0, str(Path(__file__).resolve().parent))

from docsection import replace_section

from edge import HEADWATER_READY, BenchError, Server, clean_env, create_project, free_port, headwater_command
from headwater.core.wire.subjects import DLQ_STREAM
from headwater.ops.natsserver import NatsServerProcess

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
BEGIN = "<!-- bench/faults.py: generated section begins; rerun the command below to refresh it -->"
END = "<!-- bench/faults.py: generated section ends -->"
PROJECT = "drill"
BATCH = 10  # events per request
IDLE_SECONDS = 3.0  # the pipeline counts as drained after this long with nothing pending


class DrillError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------------
# Counting what was sent


@dataclass
class Ledger:
    """Every request sent and every event acknowledged, shared by the sending threads."""

    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    acknowledged: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: str, acknowledged: list[str]) -> None:
        with self.lock:
            self.requests += 1
            self.statuses[status] += 1
            self.acknowledged.update(acknowledged)


def acknowledged_ids(response: httpx.Response, ids: list[str]) -> list[str]:
    """The events a 2xx answer acknowledged: all of them but those its `errors` list refuses."""
    if not 200 <= response.status_code < 300:
        return []
    try:
        refused = {e["index"] for e in response.json().get("errors", []) if isinstance(e, dict)}
    except (ValueError, AttributeError):
        refused = set()
    return [message_id for index, message_id in enumerate(ids) if index not in refused]


def event(message_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Drill",
        "userId": "u-1",
        "messageId": message_id,
        "properties": {"n": message_id},
        **extra,
    }


class Sender:
    """Posts batches of BATCH events with unique messageIds at a steady rate in a thread."""

    def __init__(self, url: str, key: str, ledger: Ledger, prefix: str, rate: float = 20.0) -> None:
        self.url, self.key, self.ledger, self.prefix, self.rate = url, key, ledger, prefix, rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._n = 0

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(timeout=10, auth=(self.key, "")) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                self.send_one(client)
                self._stop.wait(max(0.0, 1 / self.rate - (time.monotonic() - started)))

    def send_one(self, client: httpx.Client) -> None:
        ids = [f"{self.prefix}-{self._n}-{i}" for i in range(BATCH)]
        self._n += 1
        try:
            response = client.post(
                f"{self.url}/v1/batch",
                json={"batch": [event(i) for i in ids]},
            )
        except httpx.HTTPError as exc:
            self.ledger.record(type(exc).__name__, [])
            return
        self.ledger.record(str(response.status_code), acknowledged_ids(response, ids))


# ---------------------------------------------------------------------------------------------------
# The stack


def run_headwater(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*headwater_command(), *args], capture_output=True, text=True, env=clean_env(), timeout=timeout
    )


class Stack:
    """nats-server, one edge, one consumer, in a work directory of their own."""

    def __init__(
        self,
        work: Path,
        spool_dir: Path | None = None,
        clickhouse_dir: Path | None = None,
        edge_flags: tuple[str, ...] = (),
    ) -> None:
        self.work = work
        self.edge_flags = edge_flags
        self.spool_dir = spool_dir or work / "spool"
        self.clickhouse_dir = clickhouse_dir or work / "clickhouse"
        self.nats = NatsServerProcess(work / "nats", "127.0.0.1", 0, work / "nats-server.log")
        self.nats_url = ""
        self.edge: Server | None = None
        self.consumer: Server | None = None
        self.edge_port = free_port()
        self.key = ""
        self.warmup = Ledger()

    # -- roles

    def start(self) -> None:
        self.nats_url = self.nats.start()
        self.key = create_project(self.nats_url, self.work, self.clickhouse_dir, PROJECT)
        self.start_edge()
        self.start_consumer()

    def start_edge(self, wait_ready: bool = True) -> None:
        edge = Server("edge", 1, self.edge_port, self.work)
        edge.spawn(
            [*headwater_command(), "serve", "edge", "--host", "127.0.0.1", "--port", str(edge.port),
             "--operator-port", "0",
             "--nats-url", self.nats_url, "--spool-dir", str(self.spool_dir), "--operator-port", "0",
             *self.edge_flags, "--log-level", "warning"],
            clean_env(),
        )  # fmt: skip
        edge.wait_ready(HEADWATER_READY, timeout=60)
        self.edge = edge
        if wait_ready:
            self.wait_accepting()

    def wait_accepting(self, timeout: float = 60) -> None:
        """The edge answers an event 2xx (its registry knows the project)."""
        deadline = time.monotonic() + timeout
        ledger = Ledger()
        with httpx.Client(timeout=10, auth=(self.key, "")) as client:
            sender = Sender(self.url, self.key, ledger, "warmup")
            while time.monotonic() < deadline:
                sender.send_one(client)
                if ledger.acknowledged:
                    self.warmup = ledger
                    return
                time.sleep(0.2)
        raise DrillError(f"the edge accepts nothing: {dict(ledger.statuses)}")

    def start_consumer(self) -> None:
        consumer = Server("consumer", 1, free_port(), self.work)
        consumer.spawn(
            [*headwater_command(), "serve", "consumer", "--host", "127.0.0.1", "--port", str(consumer.port),
             "--nats-url", self.nats_url, "--clickhouse-url", f"chdb://{self.clickhouse_dir}",
             "--log-level", "warning"],
            clean_env(),
        )  # fmt: skip
        consumer.wait_ready(HEADWATER_READY, timeout=120)
        self.consumer = consumer

    @property
    def url(self) -> str:
        assert self.edge is not None
        return self.edge.url

    def kill(self, server: Server | None) -> None:
        assert server is not None
        for process in server.processes:
            process.kill()
            process.wait()

    def stop(self) -> None:
        for server in (self.edge, self.consumer):
            if server is not None:
                server.stop()
        self.nats.stop()

    def logs(self) -> str:
        return "".join(s.output()[-4000:] for s in (self.edge, self.consumer) if s is not None)

    # -- waiting and counting

    def wait_idle(self, timeout: float) -> None:
        """Until the spool is empty and the durable consumer has nothing pending, IDLE_SECONDS long."""
        deadline, idle_since = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            busy = self.spooled() > 0 or asyncio.run(self.pending()) > 0
            idle_since = None if busy else idle_since or time.monotonic()
            if idle_since is not None and time.monotonic() - idle_since >= IDLE_SECONDS:
                return
            time.sleep(0.5)
        raise DrillError(f"not drained within {timeout:.0f} s (spooled {self.spooled()})")

    def spooled(self) -> int:
        result = run_headwater("spool", "status", "--spool-dir", str(self.spool_dir), "--json")
        if result.returncode != 0:
            return 1  # unreadable (a full disk, say): not known to be empty
        return sum(int(row["entries"]) for row in json.loads(result.stdout or "[]"))

    async def pending(self) -> int:
        client = await nats.connect(self.nats_url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            js = client.jetstream()
            total = 0
            for info in await js.consumers_info("HW_EVENTS"):
                total += (info.num_pending or 0) + (info.num_ack_pending or 0)
            return total
        finally:
            await client.close()

    async def dead_lettered(self) -> int:
        client = await nats.connect(self.nats_url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            return (await client.jetstream().stream_info(DLQ_STREAM)).state.messages
        finally:
            await client.close()

    def stored(self) -> tuple[set[str], int, int]:
        """(message ids stored, events visible twice or more under FINAL, extra raw rows), read with
        the consumer stopped (the embedded engine admits one process)."""
        assert self.consumer is not None
        self.consumer.stop()
        self.consumer = None
        ids = self.query("SELECT DISTINCT message_id FROM events WHERE event = 'Drill'")
        final = self.query("SELECT count() - uniqExact(message_id) FROM events FINAL WHERE event = 'Drill'")
        raw = self.query("SELECT count() - uniqExact(message_id) FROM events WHERE event = 'Drill'")
        return set(ids), int(final[0]), int(raw[0])

    def query(self, sql: str) -> list[str]:
        result = run_headwater(
            "query", "--clickhouse-url", f"chdb://{self.clickhouse_dir}", "--project", PROJECT, sql
        )
        if result.returncode != 0:
            raise DrillError(f"query failed: {result.stderr}")
        return result.stdout.split()


# ---------------------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Row:
    scenario: str
    fault: str
    requests: int = 0
    acknowledged: int = 0
    stored: int = 0
    lost: int = 0
    doubled: int = 0
    repeats: int = 0
    dead_lettered: int = 0
    statuses: str = ""
    notes: str = ""

    @property
    def ok(self) -> bool:
        return not self.notes.startswith(("FAILED", "skipped")) and self.lost == 0 and self.doubled == 0


@dataclass(frozen=True)
class Options:
    outage_seconds: float
    load_seconds: float
    drain_timeout: float


Scenario = Callable[[Stack, Ledger, Options], str]


def baseline(stack: Stack, ledger: Ledger, options: Options) -> str:
    with Sender(stack.url, stack.key, ledger, "base"):
        time.sleep(options.load_seconds)
    return ""


def nats_down(stack: Stack, ledger: Ledger, options: Options) -> str:
    with Sender(stack.url, stack.key, ledger, "down"):
        time.sleep(options.load_seconds / 2)
        stack.nats.stop()
        time.sleep(options.outage_seconds)
        stack.nats.restart()
        time.sleep(options.load_seconds / 2)
    return f"NATS stopped {options.outage_seconds:.0f} s, events spooled meanwhile"


def nats_frozen(stack: Stack, ledger: Ledger, options: Options) -> str:
    with Sender(stack.url, stack.key, ledger, "frozen"):
        time.sleep(options.load_seconds / 2)
        stack.nats.pause()
        time.sleep(min(options.outage_seconds, 30))
        stack.nats.resume()
        time.sleep(options.load_seconds / 2)
    return f"nats-server SIGSTOPped {min(options.outage_seconds, 30):.0f} s"


def edge_killed_spooling(stack: Stack, ledger: Ledger, options: Options) -> str:
    stack.nats.stop()
    with Sender(stack.url, stack.key, ledger, "spooling"):
        time.sleep(options.load_seconds)
    spooled = stack.spooled()
    stack.kill(stack.edge)
    stack.start_edge(wait_ready=False)  # NATS still down: it must start from its cached config
    stack.wait_accepting()
    with Sender(stack.url, stack.key, ledger, "restarted"):
        time.sleep(options.load_seconds / 2)
    stack.nats.restart()
    return f"NATS down; edge SIGKILLed with {spooled} envelopes spooled, restarted while NATS was down"


def consumer_killed(stack: Stack, ledger: Ledger, options: Options) -> str:
    with Sender(stack.url, stack.key, ledger, "consumer", rate=40):
        time.sleep(options.load_seconds / 2)
        stack.kill(stack.consumer)
        time.sleep(2)
        stack.start_consumer()
        time.sleep(options.load_seconds / 2)
    return "consumer SIGKILLed mid-stream, restarted"


def clickhouse_full(stack: Stack, ledger: Ledger, options: Options) -> str:
    filler = stack.clickhouse_dir / "filler"
    fill(filler)
    with Sender(stack.url, stack.key, ledger, "chfull"):
        time.sleep(max(options.outage_seconds / 3, options.load_seconds))
    filler.unlink()
    return "the consumer's ClickHouse volume (tmpfs) full, then freed"


def spool_disk_full(stack: Stack, ledger: Ledger, options: Options) -> str:
    filler = stack.spool_dir.parent / "filler"
    stack.nats.stop()
    with Sender(stack.url, stack.key, ledger, "spoolfull"):
        time.sleep(options.load_seconds / 2)
        fill(filler)
        time.sleep(options.load_seconds / 2)
        stack.nats.restart()
        time.sleep(options.load_seconds / 2)
        alive = stack.edge is not None and stack.edge.alive()
        if alive:  # a restart on the full disk (a deploy, a crash) must come up too
            assert stack.edge is not None
            stack.edge.stop()
        try:
            stack.start_edge()
        except BenchError:
            return "FAILED: the edge cannot start on a full spool disk"
        time.sleep(options.load_seconds / 2)
        filler.unlink()
        time.sleep(options.load_seconds / 2)
    if not alive:
        return "FAILED: the edge died on the full spool disk"
    return "NATS down, the spool volume (tmpfs) filled, NATS back, edge restarted on the full disk, freed"


def bad_input(stack: Stack, ledger: Ledger, options: Options) -> str:
    """Good events interleaved with the bad inputs of the hardening issue; the process must live."""
    findings: list[str] = []
    with (
        httpx.Client(timeout=30, auth=(stack.key, "")) as client,
        Sender(stack.url, stack.key, ledger, "beside"),
    ):

        def post(name: str, path: str, content: bytes, ids: list[str], **headers: str) -> None:
            try:
                response = client.post(
                    f"{stack.url}{path}",
                    content=content,
                    headers={"Content-Type": "application/json", **headers},
                )
            except httpx.HTTPError as exc:
                ledger.record(type(exc).__name__, [])
                findings.append(f"{name}: {type(exc).__name__}")
                return
            ledger.record(str(response.status_code), acknowledged_ids(response, ids))
            findings.append(f"{name}: {response.status_code}")

        for n in range(3):
            ids = [f"utf8-{n}-{i}" for i in range(3)]
            body = json.dumps({"batch": [event(i) for i in ids]}).encode()
            body = body.replace(f'"n": "{ids[1]}"'.encode(), b'"n": "bad \xc3\x28 value"')
            post("invalid UTF-8 in a batch", "/v1/batch", body, ids)
            single = f"ff-{n}"
            raw = json.dumps(event(single, context={"page": {"url": "https://x.example/PLACE"}})).encode()
            post("\\xff in a track's page url", "/v1/track", raw.replace(b"PLACE", b"\xff"), [single])

        ids = [f"c{i}" for i in range(2500)]
        tiny = [{"type": "track", "event": "Drill", "userId": "u", "messageId": i} for i in ids]
        body = json.dumps({"context": {"blob": "x" * 240_000}, "batch": tiny}).encode()
        post("240 KB batch context x 2,500 events", "/v1/batch", body, ids)

        # The edge runs with --max-body-bytes 2000000: a body NATS's 1 MB max payload cannot carry.
        ids = [f"big-{i}" for i in range(60)]
        noise = [base64.b64encode(os.urandom(16_000)).decode() for _ in ids]  # LZ4 cannot shrink it
        body = json.dumps(
            {"batch": [event(i, properties={"r": r}) for i, r in zip(ids, noise, strict=True)]}
        ).encode()
        post("envelope past NATS's max payload", "/v1/batch", body, ids)

        deep = b'{"batch": [' + b"[" * 1000 + b"]" * 1000 + b"]}"
        post("JSON nested 1,000 deep", "/v1/batch", deep, [])
        post(
            "1 MB header",
            "/v1/track",
            json.dumps(event("hdr")).encode(),
            ["hdr"],
            **{"X-Big": "a" * 1_000_000},
        )

        closed = slow_clients(stack.url, 50, hold=min(options.outage_seconds, 90))
        findings.append(f"slowloris: {closed}/50 closed by the server")
    if stack.edge is None or not stack.edge.alive():
        return "FAILED: the edge died; " + "; ".join(findings)
    return "; ".join(findings)


def slow_clients(url: str, count: int, hold: float) -> int:
    """Open `count` connections that send half a request head and then nothing; how many did the
    server close within `hold` seconds?"""
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
        sock.settimeout(0.05)
        sockets.append(sock)
    deadline, closed = time.monotonic() + hold, set()
    while time.monotonic() < deadline and len(closed) < count:
        for index, sock in enumerate(sockets):
            if index in closed:
                continue
            try:
                if sock.recv(65536) == b"":
                    closed.add(index)
            except TimeoutError:
                pass
            except OSError:
                closed.add(index)
        time.sleep(0.5)
    for sock in sockets:
        sock.close()
    return len(closed)


def fill(path: Path) -> None:
    """Write zeros to `path` until its file system refuses (ENOSPC)."""
    chunk = b"\0" * (1 << 20)
    with path.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(chunk)
            out.flush()
            os.fsync(out.fileno())


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount") or "/usr/bin/mount"
    umount = shutil.which("umount") or "/usr/bin/umount"
    subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run([umount, "-l", str(path)], check=False)


SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "baseline": ("no fault", baseline),
    "nats-down": ("NATS stopped past nats-py's reconnect budget", nats_down),
    "nats-frozen": ("NATS frozen (SIGSTOP)", nats_frozen),
    "edge-killed-spooling": ("edge SIGKILLed while spooling", edge_killed_spooling),
    "consumer-killed": ("consumer SIGKILLed mid-stream", consumer_killed),
    "clickhouse-full": ("ClickHouse's disk full", clickhouse_full),
    "spool-disk-full": ("the spool's disk full", spool_disk_full),
    "bad-input": ("bad inputs beside good events", bad_input),
}
NEEDS_TMPFS = {"clickhouse-full": "clickhouse", "spool-disk-full": "spool"}


def run_scenario(name: str, options: Options, base: Path) -> Row:
    fault, scenario = SCENARIOS[name]
    row = Row(name, fault)
    work = base / name
    work.mkdir(parents=True)
    mounted: contextlib.ExitStack = contextlib.ExitStack()
    with mounted:
        kwargs: dict[str, Path] = {}
        if name in NEEDS_TMPFS:
            if os.geteuid() != 0:
                row.notes = "skipped: mounting a tmpfs needs root"
                return row
            volume = mounted.enter_context(
                tmpfs(work / "volume", "256m" if name == "clickhouse-full" else "96m")
            )
            kwargs = {
                "clickhouse_dir" if name == "clickhouse-full" else "spool_dir": volume / NEEDS_TMPFS[name]
            }
        edge_flags = ("--max-body-bytes", "2000000") if name == "bad-input" else ()
        stack = Stack(work, edge_flags=edge_flags, **kwargs)
        ledger = Ledger()
        try:
            stack.start()
            ledger.acknowledged |= stack.warmup.acknowledged
            row.notes = scenario(stack, ledger, options)
            if stack.consumer is None or not stack.consumer.alive():
                stack.start_consumer()
            if stack.edge is not None and not stack.edge.alive():
                row.notes = f"FAILED: the edge died. {row.notes}"
                stack.start_edge(wait_ready=False)
            try:
                stack.wait_idle(options.drain_timeout)
            except DrillError as exc:  # still count what did arrive
                row.notes = f"FAILED: {exc}. {row.notes}"
            row.dead_lettered = asyncio.run(stack.dead_lettered())
            stored, row.doubled, row.repeats = stack.stored()
        except (DrillError, BenchError, subprocess.SubprocessError, OSError) as exc:
            row.notes = "FAILED: " + (str(exc).splitlines() or [type(exc).__name__])[0][:300]
            print(stack.logs()[-3000:], file=sys.stderr)
            stored = set()
        finally:
            stack.stop()
        row.requests = ledger.requests
        row.acknowledged = len(ledger.acknowledged)
        row.stored = len(ledger.acknowledged & stored)
        row.lost = row.acknowledged - row.stored
        row.statuses = ", ".join(f"{status}: {n}" for status, n in sorted(ledger.statuses.items()))
    return row


# ---------------------------------------------------------------------------------------------------
# Report


def table(rows: list[Row]) -> str:
    columns = "scenario fault requests acknowledged stored lost doubled repeats dead-lettered answers notes"
    lines = [
        "| " + " | ".join(columns.split()) + " |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.fault} | {r.requests:,} | {r.acknowledged:,} | {r.stored:,} | {r.lost:,} "
            f"| {r.doubled:,} | {r.repeats:,} | {r.dead_lettered:,} | {r.statuses} "
            f"| {r.notes.replace('|', '/')} |"
        )
    return "\n".join(lines)


def write_doc(rows: list[Row], command: str) -> None:
    section = (
        f"Last run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, `{command}`, on "
        f"{os.cpu_count()} cores.\n\n{table(rows)}"
    )
    replace_section(BEGIN, END, section, "## The fault drill", doc=DOC)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", action="append", choices=list(SCENARIOS), help="Run this scenario; repeatable."
    )
    parser.add_argument("--quick", action="store_true", help="20 s outages (a smoke run); the doc is kept.")
    parser.add_argument("--outage", type=float, default=None, help="Seconds each outage lasts (default 150).")
    parser.add_argument("--no-doc", action="store_true", help="Do not rewrite docs/reliability.md.")
    args = parser.parse_args()
    outage = args.outage if args.outage is not None else 20.0 if args.quick else 150.0
    options = Options(outage_seconds=outage, load_seconds=6.0 if args.quick else 15.0, drain_timeout=300.0)
    names = args.only or list(SCENARIOS)
    rows = []
    base = Path(tempfile.mkdtemp(prefix="hw-faults-"))
    try:
        for name in names:
            started = time.monotonic()
            print(f"{name}: {SCENARIOS[name][0]} …", file=sys.stderr, flush=True)
            row = run_scenario(name, options, base)
            rows.append(row)
            print(
                f"{name}: {row.requests} requests, {row.acknowledged} acknowledged, {row.stored} stored, "
                f"{row.lost} lost, {row.doubled} doubled, {row.dead_lettered} dead-lettered "
                f"({time.monotonic() - started:.0f} s) {row.notes}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(table(rows))
    if not (args.no_doc or args.quick or args.only):
        write_doc(rows, "bench/faults.py")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
