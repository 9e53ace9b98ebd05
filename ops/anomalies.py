"""The table `headwater funnels anomalies` prints: the days of a saved funnel's trend, each with its
expected band, the flagged ones marked (docs/patterns.md, "Anomalies")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

# Two weeks of a range warm up, so the default reads more than the trend's 30 days.
DEFAULT_RANGE = timedelta(days=90)
_MARKS = {
    "low": "LOW  <<",
    "high": "HIGH >>",
    "normal": "",
    "insufficient_data": "(too few entries)",
    "warming_up": "(warming up)",
    "in_progress": "(in progress)",
}


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def anomalies_table(answer: dict[str, Any]) -> str:
    """One line per day (the band and a mark on flagged days), then what was flagged and how."""
    rows = [("day", "entered", "converted", "rate", "expected", "band", "")]
    for day in answer["days"]:
        band = "-" if day["lower"] is None else f"{_share(day['lower'])} to {_share(day['upper'])}"
        rows.append(
            (day["date"], f"{day['entered']:,}", f"{day['converted']:,}", _share(day["rate"]),
             _share(day["expected"]), band, _MARKS[day["status"]])
        )  # fmt: skip
    widths = [max(len(row[column]) for row in rows) for column in range(6)]
    lines = [
        "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:6], widths[1:], strict=True))])
        + (f"  {row[6]}" if row[6] else "")
        for row in rows
    ]
    method = answer["method"]
    flagged = answer["anomalies"]
    lines.append(
        f"\n{flagged} day{'' if flagged == 1 else 's'} flagged of {method['judgeable_days']} judged "
        f"(confidence {method['confidence']:.3g} over the range, baseline {method['baseline_days']} days, "
        f"seasonality {method['seasonality']}, at least {method['min_entered']} entries a day)"
    )
    return "\n".join(lines)
