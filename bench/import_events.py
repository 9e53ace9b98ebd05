"""`headwater import events` end to end against the live consumer's throughput, side by side.

    python bench/import_events.py                     # 200,000 events
    python bench/import_events.py --events 1000000
    python bench/import_events.py --skip-consumer     # the import only
    python bench/import_events.py --events 1000000 --rounds 3   # alternated; the ratio of the medians

1. A `headwater up` on a fresh data directory (free ports): NATS, the embedded ClickHouse, the
   control plane, the edge, the consumer and the sessionizer, as a user runs them.
2. A file of N Segment events as Segment's archives hold them (page/track/identify, ~3,000 user
   agents, 50,000 client addresses in `context.ip`, ~650 bytes a line) is imported into a new
   project with `headwater import events`; timed from the command's start until every event is
   in ClickHouse (`uniqExact(message_id)` through the control API's query endpoint reaches N).
3. `bench/consumer.py --events N --no-doc` measures the live consumer on the same machine right
   after (a pre-filled stream through the same consumer), and the ratio is printed
   (goal of issue 23: the import ≥ 0.8x the consumer). With `--rounds N`, steps 1-3 run N times
   in turn and the ratio is that of the two medians: either rate alone moves by 10-20% from run to
   run on this machine.

Prints only (the integrator joins it with the Singer path's into bench/import.py).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from settle import settle

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT = "bench_import"


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def write_events(path: Path, events: int, seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - test data, not a secret
    agents = [
        f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{100 + i % 30}.0.{i}.0 Safari/537.36"
        for i in range(3000)
    ]
    addresses = [
        f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        for _ in range(50_000)
    ]
    pages = ["/", "/pricing", "/docs/start", "/blog/2024/launch", "/signup", "/account/settings"]
    with gzip.open(path, "wb", compresslevel=1) as file:
        for n in range(events):
            kind = ("page", "track", "track", "identify")[n % 4]
            page = rng.choice(pages)
            event: dict[str, Any] = {
                "anonymousId": f"anon-{n % 40_000}",
                "userId": f"user-{n % 9_000}" if n % 3 else None,
                "channel": "client",
                "context": {
                    "ip": addresses[int(rng.paretovariate(1.2)) % len(addresses)],
                    "userAgent": agents[int(rng.paretovariate(1.1)) % len(agents)],
                    "library": {"name": "analytics.js", "version": "next-1.64.0"},
                    "locale": "en-GB",
                    "page": {
                        "path": page,
                        "url": f"https://shop.example{page}?utm_source=news",
                        "title": "Shop",
                        "referrer": "https://search.example/",
                    },
                },
                "messageId": f"ajs-next-{n:012d}",
                "originalTimestamp": "2024-03-02T10:00:03.120Z",
                "projectId": "src123",
                "receivedAt": "2024-03-02T10:00:04.500Z",
                "sentAt": "2024-03-02T10:00:03.900Z",
                "timestamp": f"2024-03-{1 + n % 28:02d}T{n % 24:02d}:00:03.720Z",
                "type": kind,
                "version": 2,
            }
            if kind == "track":
                event["event"] = rng.choice(["Product Viewed", "Added To Cart", "Checkout Started"])
                event["properties"] = {"sku": f"sku-{n % 500}", "price": 19.99, "currency": "EUR"}
            elif kind == "page":
                event["name"], event["properties"] = "Shop", {"path": page}
            else:
                event["traits"] = {
                    "plan": rng.choice(["free", "pro", "team"]),
                    "email": f"u{n % 9000}@example.com",
                }
            file.write(orjson.dumps(event) + b"\n")


class Up:
    def __init__(self, data_dir: Path) -> None:
        ports = ["--edge-port", "0", "--control-port", "0", "--nats-port", "0"]
        ports += ["--operator-port", "0", "--consumer-port", "0", "--sessionizer-port", "0"]
        self.process = subprocess.Popen(
            [str(BIN / "headwater"), "up", "--data-dir", str(data_dir), *ports],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=cli_env(),
        )
        self.ready = threading.Event()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(120):
            self.stop()
            raise SystemExit("headwater up did not start:\n" + "\n".join(self.output[-40:]))
        self.stack = json.loads((data_dir / "stack.json").read_text())
        self.token = (data_dir / "admin-token").read_text().strip()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))
            if "stop with Ctrl-C" in line:
                self.ready.set()

    def control(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(  # noqa: S310 - our own control URL
            self.stack["control_url"] + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our own URL
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def import_rate(events: int, work: Path) -> dict[str, float]:
    path = work / "events.jsonl.gz"
    print(f"writing {events:,} events …", flush=True)
    write_events(path, events, seed=7)
    print(f"  {path.stat().st_size / 1e6:.1f} MB gzip", flush=True)
    up = Up(work / "data")
    try:
        key = up.control("/v1/projects", {"id": PROJECT})["secret_key"]
        time.sleep(2)  # the edge learns the project from KV
        started = time.perf_counter()
        result = subprocess.run(
            [str(BIN / "headwater"), "import", "events", "--project", PROJECT, "--write-key", key,
             "--edge-url", up.stack["edge_url"], "--state", str(work / "state"), str(path)],
            capture_output=True, text=True, env=cli_env(), check=False,
        )  # fmt: skip
        sent = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"the import failed:\n{result.stdout}\n{result.stderr}")
        print(result.stdout, flush=True)
        # Rows counted from the parts' metadata (no scan) until there are enough, then the distinct
        # messages: polling uniqExact every 0.2 s scanned the growing table each time, on the cores
        # the consumer needs, and slowed what it measured.
        rows, distinct = (
            {"sql": "SELECT count() FROM events"},
            {"sql": "SELECT uniqExact(message_id) FROM events"},
        )

        def stored(query: dict[str, str]) -> int:
            return int(up.control(f"/v1/projects/{PROJECT}/query", query)["rows"][0][0])

        while not (stored(rows) >= events and stored(distinct) >= events):
            time.sleep(0.2)
        landed = time.perf_counter() - started
    finally:
        up.stop()
    return {"sent_seconds": sent, "landed_seconds": landed, "events_per_second": events / landed}


def consumer_rate(events: int) -> float:
    print(f"bench/consumer.py --events {events} --no-doc …", flush=True)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "consumer.py"), "--events", str(events), "--no-doc"],
        capture_output=True, text=True, cwd=ROOT, env=cli_env(), check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"bench/consumer.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    match = re.search(r"consumer …\n\s+([\d,]+) events/s", result.stdout)
    if match is None:
        raise SystemExit(f"no consumer rate in bench/consumer.py's output:\n{result.stdout[-3000:]}")
    return float(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=1, help="import and consumer runs, alternated")
    parser.add_argument("--skip-consumer", action="store_true")
    args = parser.parse_args()
    imports: list[float] = []
    consumers: list[float] = []
    for round_ in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"round {round_} of {args.rounds}", flush=True)
        settle()
        with tempfile.TemporaryDirectory(prefix="hw-bench-import-") as directory:
            imported = import_rate(args.events, Path(directory))
        imports.append(imported["events_per_second"])
        print(
            f"import: {args.events:,} events sent in {imported['sent_seconds']:.1f} s, all stored after "
            f"{imported['landed_seconds']:.1f} s: {imported['events_per_second']:,.0f} events/s",
            flush=True,
        )
        if args.skip_consumer:
            continue
        settle()
        consumers.append(consumer_rate(args.events))
        print(f"consumer (bench/consumer.py, same size): {consumers[-1]:,.0f} events/s", flush=True)
    if args.skip_consumer:
        return
    if args.rounds > 1:
        each = ", ".join(f"{i / c:.2f}x" for i, c in zip(imports, consumers, strict=True))
        print(
            f"medians of {args.rounds} rounds: import {statistics.median(imports):,.0f} events/s, "
            f"consumer {statistics.median(consumers):,.0f} events/s (each round's ratio: {each})"
        )
    ratio = statistics.median(imports) / statistics.median(consumers)
    print(f"import ÷ consumer: {ratio:.2f}x (goal ≥ 0.8x)")


if __name__ == "__main__":
    main()
