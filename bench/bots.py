"""The bot filter's crawler list, measured: hit rates and time per user agent, uncached.

    python bench/bots.py

Two sets of user agents: the examples (`instances`) of the `crawler-user-agents` list, which should
be flagged, and fake-useragent's database of real browsers (desktop, mobile and tablet; each string
once), which should not. For each candidate detector: how many of each set it flags and the time
per user agent on a cold start (no cache: what the consumer pays once per distinct user agent). The
candidates are headwater's own check (headwater.privacy.bots: automation names, then the
crawler-user-agents patterns) and, when installed (`pip install crawlerdetect device-detector`;
they are no dependency of headwater), `crawlerdetect` and Matomo's `device-detector` port: the
comparison docs/privacy.md reports, and the reason crawler-user-agents was chosen.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path

import fake_useragent

from headwater.privacy.bots import crawler_list, default_crawler_patterns, user_agent_reason


def crawler_examples() -> list[str]:
    return [str(i) for entry in crawler_list() for i in entry.get("instances") or []]  # type: ignore[attr-defined]


def real_browsers() -> list[str]:
    path = Path(fake_useragent.__file__).parent / "data" / "browsers.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted({r["useragent"] for r in rows if r["type"] in ("desktop", "mobile", "tablet")})


def candidates() -> dict[str, Callable[[str], bool]]:
    default_crawler_patterns()  # compiled before timing, as a consumer does once
    found: dict[str, Callable[[str], bool]] = {
        "headwater (crawler-user-agents)": lambda ua: user_agent_reason(ua, False) is not None
    }
    if importlib.util.find_spec("crawlerdetect"):
        from crawlerdetect import CrawlerDetect  # type: ignore[import-not-found]

        found["crawlerdetect"] = lambda ua: bool(CrawlerDetect(user_agent=ua).isCrawler())
    if importlib.util.find_spec("device_detector"):
        from device_detector import DeviceDetector  # type: ignore[import-not-found]

        found["device-detector"] = lambda ua: bool(DeviceDetector(ua).parse().is_bot())
    return found


def main() -> None:
    sets = {"crawler examples": crawler_examples(), "real browsers": real_browsers()}
    print(f"{'detector':34} {'set':18} {'flagged':>15} {'µs / UA':>9}")
    for name, flags in candidates().items():
        flags("warm-up")
        for label, agents in sets.items():
            started = time.perf_counter()
            flagged = sum(1 for agent in agents if flags(agent))
            micros = (time.perf_counter() - started) / len(agents) * 1e6
            share = f"{flagged}/{len(agents)} {flagged / len(agents):6.1%}"
            print(f"{name:34} {label:18} {share:>15} {micros:9.0f}")


if __name__ == "__main__":
    main()
