"""What a project's data-subject tombstones cost the consumer's worker processes, per group.

    python bench/tombstones.py                          # 100,000 deleted people, 200,000 events, 3 rounds
    python bench/tombstones.py --subjects 10000 --events 100000

bench/consumer.py's workload (four projects), in groups of 500 messages (the consumer's
`fetch_batch`), two groups in flight, through the consumer's own `WorkerPool` (two worker
processes), in three arms alternated `--rounds` times in one process:

- `none`: no project has tombstones;
- `files`: project `shop` has `--subjects` deleted people (a user id and an anonymous id each: two
  digests), handed to the workers as the consumer does (consumers/tombstone_files.py: a file per
  version, read once by each worker);
- `pickled`: the same set pickled with every group of `shop`'s messages, as the consumer did
  before (each worker unpickles it per group).

Prints events/s per arm (median of the rounds) and each arm ÷ `none`. No ClickHouse or NATS: the
workers' CPU is what the tombstones cost. The deleted people include the visitors of `shop`'s first
50 requests: both arms with tombstones must leave out exactly their events (else exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from consumer import workload  # (bench/ is no package)

from headwater.consumers import processing
from headwater.consumers.processing import Decoded, Item, Processed, WorkerPool
from headwater.core.projects.settings import ProjectSettings
from headwater.core.wire.envelope import Envelope
from headwater.core.wire.subjects import events_subject
from headwater.privacy.tombstones import tombstone_digest

GROUP_MESSAGES = 500  # the consumer's default fetch_batch
IN_FLIGHT = 2  # the consumer's groups in flight: the pool's capacity with two workers


def _process_with_sets(
    items: Sequence[Item], settings: Mapping[str, ProjectSettings], tombstones: Mapping[str, frozenset[bytes]]
) -> Processed:
    """The worker's work as it was: the sets themselves pickled with the group."""
    assert processing._worker_enricher is not None
    return processing.process(processing._worker_enricher, items, settings, tombstones=tombstones)


async def run_arm(
    pool: WorkerPool, groups: list[list[Item]], arm: str, tombstones: Mapping[str, frozenset[bytes]]
) -> tuple[float, int]:
    """Seconds for every group, and the events left out as deleted people's."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(group: list[Item]) -> Processed:
        async with gate:
            if arm == "none":
                return await pool.process(group, {})
            if arm == "files":
                return await pool.process(group, {}, tombstones)
            return await asyncio.wrap_future(pool._pool.submit(_process_with_sets, group, {}, tombstones))

    started = time.perf_counter()
    processed = await asyncio.gather(*(one(group) for group in groups))
    seconds = time.perf_counter() - started
    return seconds, sum(o.suppressed for p in processed for o in p.outcomes if isinstance(o, Decoded))


def deleted_people(requests: list[tuple[str, str, bytes]], subjects: int) -> tuple[frozenset[bytes], int]:
    """`subjects` people's digests (user id and anonymous id each): the visitors of shop's first 50
    requests, the rest random; and how many events of the workload are theirs."""
    visitors = [
        Envelope.decode(data).events[0]["anonymousId"] for project, _, data in requests if project == "shop"
    ][:50]
    real = {tombstone_digest("shop", "anonymous_id", visitor) for visitor in visitors}
    theirs = sum(
        1
        for project, _, data in requests
        if project == "shop"
        for event in Envelope.decode(data).events
        if tombstone_digest("shop", "anonymous_id", event["anonymousId"]) in real
    )
    filler = {os.urandom(32) for _ in range(max(2 * subjects - len(real), 0))}
    return frozenset(real | filler), theirs


async def main(args: argparse.Namespace) -> None:
    requests = workload(args.seed, args.events)
    items = [(events_subject(project), data) for project, _request, data in requests]
    groups = [items[i : i + GROUP_MESSAGES] for i in range(0, len(items), GROUP_MESSAGES)]
    deleted, theirs = deleted_people(requests, args.subjects)
    tombstones = {"shop": deleted}
    print(
        f"{args.events:,} events in {len(items):,} messages, {len(groups)} groups of {GROUP_MESSAGES}; "
        f"project shop with {args.subjects:,} deleted people ({len(deleted):,} digests)",
        flush=True,
    )
    pool = WorkerPool(2, None)
    await pool.warm_up()
    try:
        # Untimed: the workers' caches (user agents, addresses) warmed, the file read once.
        await run_arm(pool, groups, "none", tombstones)
        await run_arm(pool, groups[:4], "files", tombstones)
        seconds: dict[str, list[float]] = {"none": [], "files": [], "pickled": []}
        for round_ in range(args.rounds):
            for arm in seconds:
                took, left_out = await run_arm(pool, groups, arm, tombstones)
                if left_out != (0 if arm == "none" else theirs):
                    raise SystemExit(f"{arm}: {left_out} events left out, {theirs} expected")
                seconds[arm].append(took)
                print(f"  round {round_ + 1} {arm}: {args.events / took:,.0f} events/s", flush=True)
    finally:
        await pool.close()
    rate = {arm: args.events / statistics.median(values) for arm, values in seconds.items()}
    print(f"left out as deleted people's, in each arm with tombstones: {theirs:,} events (as expected)")
    print("| arm | events/s, median | ÷ none |")
    print("|---|---:|---:|")
    for arm, value in rate.items():
        print(f"| {arm} | {value:,.0f} | {value / rate['none']:.2f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subjects", type=int, default=100_000, help="deleted people of project shop")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    asyncio.run(main(parser.parse_args()))
