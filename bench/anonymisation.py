"""What anonymisation rules cost the consumers' row building, per event, in one process.

    python bench/anonymisation.py                 # bench/consumer.py's workload, 20,000 events
    python bench/anonymisation.py --events 100000
    python bench/anonymisation.py --cold --events 200000 --runs 3   # each event seen once

Warm (the default): the same events again and again, so the rules' kept results all hit. `--cold`:
each event seen once, as the consumer sees them: in a fresh process per run, the rows of
`--warm-events` events are built first (so the enricher's caches and the rules' kept results are
as a running consumer's), then those of `--events` further events, in runs of 100 requests that
alternate between the arms (each with its own enricher and half of the events), so that the
machine's other work weighs on both alike.

Builds the rows of bench/consumer.py's workload with the consumers' own `envelope_rows`, without
rules and with TEN_RULES (three keyed hashes, a nested drop, a five-detector redact of `traits.*`,
four URL rules, a truncate), and prints the CPU time per event of each (the best of `--runs`).
TEN_RULES is also what the consumer benchmark's run "with ten rules" should use:

    settings_of=lambda _project: ten_rule_settings(), start_processor(settings, lambda _p: HASH_KEY)
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from consumer import workload  # (bench/ is no package)

from headwater.consumers.enrich import Enricher
from headwater.consumers.rows import envelope_rows
from headwater.consumers.wire import ReadEnvelope, read_envelope
from headwater.core.projects.settings import ProjectSettings

TEN_RULES: list[dict[str, Any]] = [
    {"path": "userId", "action": "hash"},
    {"path": "anonymousId", "action": "hash"},
    {"path": "properties.email", "action": "hash"},
    {"path": "properties.user.address.street", "action": "drop"},
    {"path": "traits.*", "action": "redact", "detectors": ["email", "phone", "card", "iban", "ip"]},
    {"path": "context.page.url", "action": "redact", "detectors": ["url_secrets"]},
    {"path": "context.page.search", "action": "redact", "detectors": ["url_secrets"]},
    {"path": "context.page.referrer", "action": "redact", "keep_query": ["utm_source"]},
    {"path": "properties.url", "action": "redact", "detectors": ["url_secrets"]},
    {"path": "properties.note", "action": "truncate", "length": 4},
]
HASH_KEY = b"bench-anonymisation-key-32-bytes"


def ten_rule_settings() -> ProjectSettings:
    return ProjectSettings().merged({"anonymisation": {"rules": TEN_RULES}})


def per_event(envelopes: list[ReadEnvelope], settings: ProjectSettings, runs: int) -> float:
    """CPU µs per event of building every envelope's rows (the best of `runs`, after a warm-up)."""
    enricher = Enricher(None)
    events = sum(len(e.events) for e in envelopes)
    best = float("inf")
    for _ in range(runs + 1):
        started = time.process_time()
        for envelope in envelopes:
            envelope_rows(envelope, enricher, settings, None, HASH_KEY)
        best = min(best, time.process_time() - started)
    return best / events * 1e6


COLD_CHUNK = 100  # requests in a run of one arm


def cold_per_event(events: int, warm: int, seed: int) -> tuple[float, float]:
    """CPU µs per event without rules and with TEN_RULES, each event seen once (see above)."""
    envelopes = [read_envelope(data)[0] for _project, _request, data in workload(seed, warm + events)]
    arms = [(ProjectSettings(), Enricher(None)), (ten_rule_settings(), Enricher(None))]
    seen, first = 0, 0
    while seen < warm:
        for settings, enricher in arms:
            envelope_rows(envelopes[first], enricher, settings, None, HASH_KEY)
        seen, first = seen + len(envelopes[first].events), first + 1
    gc.collect()
    gc.freeze()  # the workload held in memory is no consumer's: a collection need not walk it
    seconds, counts = [0.0, 0.0], [0, 0]
    for number, start in enumerate(range(first, len(envelopes), COLD_CHUNK)):
        chunk = envelopes[start : start + COLD_CHUNK]
        arm = number % 2
        settings, enricher = arms[arm]
        started = time.process_time()
        for envelope in chunk:
            envelope_rows(envelope, enricher, settings, None, HASH_KEY)
        seconds[arm] += time.process_time() - started
        counts[arm] += sum(len(e.events) for e in chunk)
    return seconds[0] / counts[0] * 1e6, seconds[1] / counts[1] * 1e6


def cold(args: argparse.Namespace) -> str:
    """`args.runs` fresh processes of `cold_per_event`; the median of each arm and of the gap."""
    results = []
    for _ in range(args.runs):
        command = [sys.executable, __file__, "--child", "--events", str(args.events)]
        command += ["--warm-events", str(args.warm_events), "--seed", str(args.seed)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
        results.append((float(output[0]), float(output[1])))
    without = statistics.median(r[0] for r in results)
    with_rules = statistics.median(r[1] for r in results)
    gaps = ", ".join(f"+{r[1] - r[0]:.2f}" for r in results)
    return (
        f"{args.events:,} events seen once (after {args.warm_events:,}), median of {args.runs} run(s): "
        f"{without:.2f} µs an event without rules, {with_rules:.2f} µs with ten "
        f"(+{statistics.median(r[1] - r[0] for r in results):.2f}; each run {gaps})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cold", action="store_true", help="each event seen once (see above)")
    parser.add_argument("--warm-events", type=int, default=50_000, help="with --cold: built before timing")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(*cold_per_event(args.events, args.warm_events, args.seed))
        return 0
    if args.cold:
        print(cold(args))
        return 0
    envelopes = [read_envelope(data)[0] for _project, _request, data in workload(args.seed, args.events)]
    without = per_event(envelopes, ProjectSettings(), args.runs)
    with_rules = per_event(envelopes, ten_rule_settings(), args.runs)
    print(
        f"{args.events:,} events in {len(envelopes):,} requests: {without:.2f} µs an event without rules, "
        f"{with_rules:.2f} µs with ten (+{with_rules - without:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
