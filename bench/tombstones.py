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
workers' CPU is what the tombstones cost.
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
from headwater.consumers.processing import Item, Processed, WorkerPool
from headwater.core.projects.settings import ProjectSettings
from headwater.core.wire.subjects import events_subject

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
) -> float:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(group: list[Item]) -> None:
        async with gate:
            if arm == "none":
                await pool.process(group, {})
            elif arm == "files":
                await pool.process(group, {}, tombstones)
            else:
                await asyncio.wrap_future(pool._pool.submit(_process_with_sets, group, {}, tombstones))

    started = time.perf_counter()
    await asyncio.gather(*(one(group) for group in groups))
    return time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    requests = workload(args.seed, args.events)
    items = [(events_subject(project), data) for project, _request, data in requests]
    groups = [items[i : i + GROUP_MESSAGES] for i in range(0, len(items), GROUP_MESSAGES)]
    deleted = frozenset(os.urandom(32) for _ in range(2 * args.subjects))
    tombstones = {"shop": deleted}
    print(
        f"{args.events:,} events in {len(items):,} messages, {len(groups)} groups of {GROUP_MESSAGES}; "
        f"project shop with {args.subjects:,} deleted people ({len(deleted):,} digests)",
        flush=True,
    )
    pool = WorkerPool(2, None)
    await pool.warm_up()
    try:
        await run_arm(pool, groups[:4], "files", tombstones)  # the workers read the file once here
        seconds: dict[str, list[float]] = {"none": [], "files": [], "pickled": []}
        for round_ in range(args.rounds):
            for arm in seconds:
                took = await run_arm(pool, groups, arm, tombstones)
                seconds[arm].append(took)
                print(f"  round {round_ + 1} {arm}: {args.events / took:,.0f} events/s", flush=True)
    finally:
        await pool.close()
    rate = {arm: args.events / statistics.median(values) for arm, values in seconds.items()}
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
