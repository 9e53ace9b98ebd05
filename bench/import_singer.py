"""Singer import benchmark: rows/s from a tap's standard output to durable, through the real
`target-headwater` (a child process reading a file of Singer messages), a control plane and a
consumer role's import writer (in this process, on NATS and the embedded ClickHouse).

    python bench/import_singer.py                 # 200,000 rows of a users-like stream
    python bench/import_singer.py --rows 1000000
    python bench/import_singer.py --quick         # 20,000 rows, checks only (exit 1 on a loss)

Two figures: rows/s until the target exits (its last STATE written: every row acknowledged by
JetStream, i.e. durable) and rows/s until every row is in ClickHouse (the writer caught up). With
them, the CPU seconds of the target process and of this process (control plane + writer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx

from headwater.consumers.settings import ConsumerSettings
from headwater.control.settings import AdminToken, ControlSettings
from headwater.edge.streams import StreamSettings
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.runtime import Stack, StackSettings

TOKEN = "bench-admin-token-0123456789"  # noqa: S105 -- the throwaway stack's own token
PROJECT = "bench_import"
SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "organisation_id": {"type": ["integer", "null"]},
        "plan": {"type": ["string", "null"]},
        "active": {"type": ["boolean", "null"]},
        "score": {"type": ["number", "null"]},
        "signed_up_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def tap_file(path: Path, rows: int) -> None:
    """A tap's output: SCHEMA, the records, a STATE every 10,000 records."""
    rng = random.Random(7)  # noqa: S311 -- a reproducible file, not a secret
    plans = ["free", "team", "business", "enterprise"]
    with path.open("w") as out:
        out.write(
            json.dumps(
                {"type": "SCHEMA", "stream": "public-users", "schema": SCHEMA, "key_properties": ["id"]}
            )
        )
        out.write("\n")
        for i in range(1, rows + 1):
            month, day = rng.randrange(1, 13), rng.randrange(1, 29)
            record = {  # ~190 bytes of JSON, 8 columns
                "id": i,
                "email": f"user{i}@example.com",
                "name": f"User {i}",
                "organisation_id": rng.randrange(1, 10_000),
                "plan": rng.choice(plans),
                "active": rng.random() < 0.9,
                "score": round(rng.random() * 100, 3),
                "signed_up_at": f"2026-{month:02d}-{day:02d}T10:00:{i % 60:02d}",
            }
            out.write(json.dumps({"type": "RECORD", "stream": "public-users", "record": record}))
            out.write("\n")
            if i % 10_000 == 0 or i == rows:
                out.write(json.dumps({"type": "STATE", "value": {"bookmarks": {"public-users": {"id": i}}}}))
                out.write("\n")


class StackThread:
    def __init__(self, nats_url: str, clickhouse_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        settings = StackSettings(
            nats_url=nats_url,
            streams=StreamSettings(),
            clickhouse_url=clickhouse_url,
            control=ControlSettings(
                clickhouse_url=clickhouse_url, admin_tokens=(AdminToken("bench", TOKEN),), port=0
            ),
            consumer=ConsumerSettings(clickhouse_url=clickhouse_url, workers=0),
        )
        self.stack = Stack(settings)
        self.run(self.stack.start())

    def run(self, work: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(work, self.loop)
        return future.result(timeout=300)


def stored_rows(stack: Stack) -> int:
    clickhouse = stack.clickhouse
    assert clickhouse is not None
    try:
        return int(
            clickhouse.query(f"SELECT count() FROM hw_{PROJECT}.import_public_users FINAL").result_rows[0][0]
        )
    except Exception:  # the writer has not made the table yet
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="20,000 rows")
    args = parser.parse_args()
    rows = 20_000 if args.quick else args.rows
    work = Path(tempfile.mkdtemp(prefix="hw-bench-import-"))
    nats = NatsServerProcess(work / "nats", port=0)
    nats.start()
    try:
        tap = work / "tap.jsonl"
        tap_file(tap, rows)
        holder = StackThread(nats.url, f"chdb://{work / 'clickhouse'}")
        stack = holder.stack
        response = httpx.post(
            f"{stack.control_url}/v1/projects",
            json={"id": PROJECT},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 201, response.text
        config = work / "target.json"
        config.write_text(json.dumps({"control_url": stack.control_url, "token": TOKEN, "project": PROJECT}))
        target = Path(sys.executable).parent / "target-headwater"
        own_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        with tap.open("rb") as stdin:
            done = subprocess.run(
                [str(target), "--config", str(config)], stdin=stdin, capture_output=True, check=False
            )
        durable = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr.decode()[-3000:], file=sys.stderr)
            return 1
        while stored_rows(stack) < rows and time.perf_counter() - started < 600:
            time.sleep(0.05)
        stored_at = time.perf_counter() - started
        own = resource.getrusage(resource.RUSAGE_SELF)
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        count = stored_rows(stack)
        states = [line for line in done.stdout.decode().splitlines() if line.strip()]
        print(f"rows                      {rows:,}")
        print(f"STATE lines written       {len(states)} (last {states[-1] if states else None})")
        print(f"to durable (target exit)  {durable:6.2f} s  {rows / durable:10,.0f} rows/s")
        print(f"to ClickHouse (FINAL)     {stored_at:6.2f} s  {rows / stored_at:10,.0f} rows/s")
        print(f"CPU target process        {child.ru_utime + child.ru_stime:6.2f} s")
        cpu_self = own.ru_utime + own.ru_stime - own_before.ru_utime - own_before.ru_stime
        print(f"CPU control + writer      {cpu_self:6.2f} s (this process, includes the embedded engine)")
        holder.run(stack.stop())
        if count != rows:
            print(f"LOSS: {count} rows stored of {rows}", file=sys.stderr)
            return 1
        return 0
    finally:
        nats.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
