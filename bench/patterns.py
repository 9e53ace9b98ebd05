"""Pattern discovery benchmark (issue 21): the generator's journeys through mining, drivers and the
next-step model; time per stage, peak memory, and how well each finds what was planted.

Each size runs in a child process of its own, so its peak resident memory (ru_maxrss: the journeys
as Python tuples, the miner's numpy arrays, the Markov counts) is its own. Per size: suggestions
(recall and precision of the top 20 against the planted patterns, a match being the planted
sequence or a sub/super-sequence one step off), drivers (every converter-only pattern above every
pattern planted in both groups; none on the null data set of the same size), and held-out top-3
accuracy of the next-step model (fit on 80%, scored on the rest) beside the three most frequent
steps. Exits 1 when a full-size run misses recall >= 0.9, precision >= 0.5, the drivers' order,
the null's silence, or the baseline.

    python bench/patterns.py                  # 50,000 sessions; updates docs/patterns.md
    python bench/patterns.py --large          # also 500,000
    python bench/patterns.py --quick          # 3,000 sessions, prints only (the smoke test)
    python bench/patterns.py --clickhouse     # through the embedded ClickHouse (docs/benchmarks.md)

With `--clickhouse` each size's journeys are first written into an embedded ClickHouse as the
consumer writes them (envelopes, the consumer's rows and enrichment, its writer) and read back
through the patterns API's reader (one query, one row: analytics/patterns/source.py); mining,
drivers and the model then run on what was read. The write and the read are timed apart from the
mining; the table goes to docs/benchmarks.md instead of docs/patterns.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from docsection import replace_section

from headwater.analytics.patterns.drivers import drivers
from headwater.analytics.patterns.generator import GeneratorSettings, generate, null_dataset
from headwater.analytics.patterns.journeys import Limits
from headwater.analytics.patterns.markov import fit, top_k_accuracy
from headwater.analytics.patterns.mining import MiningSettings, suggest
from headwater.analytics.patterns.prefixspan import contains

DOC = Path(__file__).resolve().parents[1] / "docs" / "patterns.md"
BEGIN, END = (
    "<!-- bench/patterns.py: generated section begins -->",
    "<!-- bench/patterns.py: generated section ends -->",
)
CLICKHOUSE_DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
CLICKHOUSE_BEGIN, CLICKHOUSE_END = (
    "<!-- bench/patterns.py --clickhouse: generated section begins -->",
    "<!-- bench/patterns.py --clickhouse: generated section ends -->",
)
T = TypeVar("T")


def one_step_off(found: tuple[str, ...], planted: tuple[str, ...]) -> bool:
    return (
        found == planted
        or (len(found) == len(planted) - 1 and contains(planted, found))
        or (len(found) == len(planted) + 1 and contains(found, planted))
    )


def timed(seconds: dict[str, float], stage: str, run: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = run()
    seconds[stage] = round(time.perf_counter() - start, 2)
    return result


def measure(sessions: int, seed: int, through_clickhouse: bool = False) -> dict[str, Any]:
    """One size, in this process: the numbers of one row."""
    seconds: dict[str, float] = {}
    data = timed(seconds, "generate", lambda: generate(GeneratorSettings(sessions=sessions, seed=seed)))
    journeys = data.journeys
    extra: dict[str, Any] = {}
    if through_clickhouse:
        from patterns_store import read, write  # the consumer's modules: only in this mode

        with tempfile.TemporaryDirectory(prefix="hw-bench-patterns-") as work:
            url, written, extra["events"] = write(Path(work), data.journeys)
            journeys, reading = read(url, Limits())
        seconds["write"], seconds["read"] = round(written, 2), round(reading, 2)
        extra["journeys_read"] = len(journeys)
    suggestions = timed(seconds, "mining", lambda: suggest(journeys, MiningSettings(top=20)))
    planted = [p.steps for p in data.planted]
    recall = sum(any(one_step_off(s.steps, p) for s in suggestions) for p in planted) / len(planted)
    right = sum(any(one_step_off(s.steps, p) for p in planted) for s in suggestions)
    found = timed(seconds, "drivers", lambda: drivers(journeys, data.goal))
    rank = {p: [i for i, d in enumerate(found) if one_step_off(d.steps, p.steps)] for p in data.planted}
    converter_ranks = [min(rank[p]) for p in data.converter_only if rank[p]]
    shared_ranks = [min(rank[p]) for p in data.shared if rank[p]]
    cut = int(0.8 * sessions)
    fitted = timed(seconds, "markov", lambda: fit(journeys[:cut]))
    accuracy = timed(seconds, "markov_score", lambda: top_k_accuracy(fitted.model, journeys[cut:]))
    null = null_dataset(sessions, seed + 1)
    null_drivers = timed(seconds, "null_drivers", lambda: drivers(null.journeys, null.goal))
    return {
        "sessions": sessions,
        "seconds": seconds,
        "work_seconds": round(sum(v for k, v in seconds.items() if k in ("mining", "drivers", "markov")), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "recall": recall,
        "precision": right / max(1, len(suggestions)),
        "suggestions": len(suggestions),
        "converter_only_found": f"{len(converter_ranks)}/{len(data.converter_only)}",
        "converter_only_above_shared": bool(converter_ranks)
        and len(converter_ranks) == len(data.converter_only)
        and max(converter_ranks) < min(shared_ranks, default=len(found)),
        "null_drivers": len(null_drivers),
        "markov_order": fitted.model.order,
        "top3_model": round(accuracy.model, 3),
        "top3_baseline": round(accuracy.baseline, 3),
        **extra,
    }


def child(sessions: int, seed: int, through_clickhouse: bool = False) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--one", str(sessions), "--seed", str(seed)]
        + (["--clickhouse"] if through_clickhouse else []),
        capture_output=True,
        text=True,
        check=True,
    )
    row: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| sessions | mining s | drivers s | Markov s (fit + score) | mining+drivers+Markov s | peak RSS MB "
        "| recall | precision | converter-only drivers above shared | null drivers | order "
        "| top-3 model / baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["seconds"]
        lines.append(
            f"| {r['sessions']:,} | {s['mining']} | {s['drivers']} | {s['markov']} + {s['markov_score']} "
            f"| {r['work_seconds']} | {r['peak_rss_mb']} | {r['recall']:.2f} | {r['precision']:.2f} "
            f"| {'yes' if r['converter_only_above_shared'] else 'no'} ({r['converter_only_found']}) "
            f"| {r['null_drivers']} | {r['markov_order']} "
            f"| {r['top3_model']:.3f} / {r['top3_baseline']:.3f} |"
        )
    return "\n".join(lines)


def clickhouse_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| sessions | events | write s (consumer's path) | read s (journeys query) | mining s | drivers s "
        "| Markov s (fit + score) | peak RSS MB | recall | precision | converter-only drivers above shared "
        "| top-3 model / baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["seconds"]
        lines.append(
            f"| {r['journeys_read']:,} | {r['events']:,} | {s['write']} | {s['read']} | {s['mining']} "
            f"| {s['drivers']} | {s['markov']} + {s['markov_score']} | {r['peak_rss_mb']} "
            f"| {r['recall']:.2f} | {r['precision']:.2f} "
            f"| {'yes' if r['converter_only_above_shared'] else 'no'} ({r['converter_only_found']}) "
            f"| {r['top3_model']:.3f} / {r['top3_baseline']:.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--large", action="store_true", help="also 500,000 sessions")
    parser.add_argument("--quick", action="store_true", help="3,000 sessions, print only")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--clickhouse", action="store_true", help="write into and read back from the embedded ClickHouse"
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.seed, args.clickhouse)))
        return 0
    sizes = [3_000] if args.quick else [50_000, 500_000] if args.large else [50_000]
    rows = [child(n, args.seed, args.clickhouse) for n in sizes]
    text = clickhouse_table(rows) if args.clickhouse else table(rows)
    print(text)
    failed = not args.quick and any(
        r["recall"] < 0.9
        or r["precision"] < 0.5
        or not r["converter_only_above_shared"]
        or r["null_drivers"]
        or r["top3_model"] <= r["top3_baseline"]
        for r in rows
    )
    if not (args.quick or args.no_doc):
        note = (
            f"`python bench/patterns.py{' --large' if args.large else ''}` (seed {args.seed}), "
            f"Python {platform.python_version()}, {platform.machine()}, a shared 2-core machine: "
            "times are noisy, read them as upper bounds. Seconds per stage, one run each; "
            "peak RSS of the size's own process (generation included)."
        )
        if args.clickhouse:
            note = note.replace("bench/patterns.py", "bench/patterns.py --clickhouse", 1)
            replace_section(
                CLICKHOUSE_BEGIN,
                CLICKHOUSE_END,
                f"{note}\n\n{text}",
                "## Pattern discovery",
                doc=CLICKHOUSE_DOC,
            )
        else:
            replace_section(BEGIN, END, f"{note}\n\n{text}", "## Measured", doc=DOC)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
