"""`POST /v1/projects/{id}/funnels/{funnel_id}/anomalies`: a saved funnel's daily trend, each day
judged against the band its baseline predicts (analytics/patterns/anomalies.py; docs/patterns.md,
"Anomalies")."""

from __future__ import annotations

from datetime import date
from typing import Any

import msgspec

from headwater.analytics.patterns.anomalies import (
    DISPERSION_DAYS,
    AnomalyError,
    BandSettings,
    DayCounts,
    judge,
)
from headwater.core.service.errors import APIError

from .schemas import AnomalyDay, AnomalyMethod, FunnelAnomaliesAnswer, SavedFunnelAnomaliesRun


def band_settings(asked: SavedFunnelAnomaliesRun) -> BandSettings:
    """The method's settings; 400 naming the field when they do not go together."""
    chosen = BandSettings(
        asked.baseline_days, asked.min_baseline_days, asked.confidence, asked.min_entered, asked.seasonality
    )
    try:
        chosen.check()
    except AnomalyError as exc:
        raise APIError(400, "invalid_field", str(exc), exc.field) from None
    return chosen


def anomalies_of_trend(trend: dict[str, Any], chosen: BandSettings) -> dict[str, Any]:
    """The answer for a trend as `run_trend` answers it: a day's entries are its first step's
    count, its conversions its last step's."""
    series = [
        DayCounts(date.fromisoformat(day["date"]), day["steps"][0]["count"], day["steps"][-1]["count"],
                  day["complete"])
        for day in trend["days"]
    ]  # fmt: skip
    judged = judge(series, chosen)
    days = [
        AnomalyDay(
            day.day.isoformat(), asked.complete, day.entered, day.converted, day.rate, day.status,
            day.expected, day.lower, day.upper, day.p_value, day.z,
        )
        for asked, day in zip(series, judged.days, strict=True)
    ]  # fmt: skip
    method = AnomalyMethod(
        "beta-binomial band", chosen.baseline_days, chosen.min_baseline_days, DISPERSION_DAYS,
        chosen.confidence, chosen.min_entered, chosen.seasonality, judged.judgeable, judged.day_alpha,
    )  # fmt: skip
    answer: dict[str, Any] = msgspec.to_builtins(FunnelAnomaliesAnswer(days, method, judged.anomalies))
    return answer
