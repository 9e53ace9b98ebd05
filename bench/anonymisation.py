"""What anonymisation rules cost the consumers' row building, per event, in one process.

    python bench/anonymisation.py                 # bench/consumer.py's workload, 20,000 events
    python bench/anonymisation.py --events 100000

Builds the rows of bench/consumer.py's workload with the consumers' own `envelope_rows`, without
rules and with TEN_RULES (three keyed hashes, a nested drop, a five-detector redact of `traits.*`,
four URL rules, a truncate), and prints the CPU time per event of each (the best of `--runs`).
TEN_RULES is also what the consumer benchmark's run "with ten rules" should use:

    settings_of=lambda _project: ten_rule_settings(), start_processor(settings, lambda _p: HASH_KEY)
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
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
