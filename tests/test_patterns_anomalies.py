"""The anomaly band of a daily conversion rate (docs/patterns.md, "Anomalies"): false alarms and
detection measured on seeded simulations, invariants on random series, the band against a plain
reference, and the over-dispersion estimator against the rho it was simulated with."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.analytics.patterns.anomalies import (
    AnomalyError,
    BandSettings,
    DayCounts,
    cautious_overdispersion,
    day_band,
    judge,
    overdispersion,
    pooled_rate,
    predictive,
)

MONDAY = date(2026, 1, 5)
DAYS = 90


def simulated(
    seed: int, rate: float = 0.3, rho: float = 0.0, planted: tuple[int, float] | None = None
) -> list[DayCounts]:
    """DAYS days of 100 to 600 entries; weekends convert at 0.7 times the weekday rate; with rho > 0
    each day's true rate is drawn from a beta of that intra-day correlation. `planted`: (day index,
    factor) multiplies that day's rate, with at least 200 entries."""
    rng = np.random.default_rng(seed)
    series = []
    for i in range(DAYS):
        day = MONDAY + timedelta(days=i)
        n = int(rng.integers(100, 601))
        p = rate * (0.7 if day.weekday() >= 5 else 1.0)
        if planted is not None and i == planted[0]:
            n, p = max(n, 200), p * planted[1]
        if rho > 0:
            p = float(rng.beta(p * (1 / rho - 1), (1 - p) * (1 / rho - 1)))
        series.append(DayCounts(day, n, int(rng.binomial(n, p))))
    return series


SEEDS = range(300)


@pytest.mark.parametrize("rho", [0.0, 0.002])
def test_a_quiet_series_raises_almost_nothing(rho: float) -> None:
    """Nominal: at most 1% of quiet series get any flag (Bonferroni at 99%), so far fewer than 1%
    of their days. Measured (300 seeds of 90 days, 76 judged each): binomial days 1 series with a
    flag, 1 day of 22,800; over-dispersed days (rho = 0.002, the day's true rate wandering by about
    ±0.02 around 0.3) the same, 1 and 1 (with rho's point estimate instead of its estimate plus one
    standard error: 3 and 12 series)."""
    flagged_series = flagged_days = judged_days = 0
    for seed in SEEDS:
        judged = judge(simulated(seed, rho=rho))
        judged_days += judged.judgeable
        flagged_days += judged.anomalies
        flagged_series += judged.anomalies > 0
    print(f"rho={rho}: {flagged_series}/{len(SEEDS)} series, {flagged_days}/{judged_days} days flagged")
    assert judged_days == len(SEEDS) * (DAYS - 14)  # the first two weeks warm up
    assert flagged_days / judged_days <= 0.001
    assert flagged_series / len(SEEDS) <= 0.02


@pytest.mark.parametrize(
    ("factor", "status", "at_least"),
    [(0.5, "low", 0.7), (0.0, "low", 1.0), (2.0, "high", 0.97), (1.6, "high", 0.7)],
)
def test_a_planted_drop_or_spike_is_flagged(factor: float, status: str, at_least: float) -> None:
    """The rate of one day with at least 200 entries multiplied by `factor` (base rate 0.3 on
    weekdays, 0.21 on weekends). Measured over 300 seeds: halved 76% found, to 0 100%, doubled
    99%, x1.6 77%; the misses are mostly weekend days near 200 entries, where halving 0.21 is
    about 3.5 standard deviations, under the Bonferroni threshold of ~3.8 for 76 days. 1 other day
    of the 300 series was flagged."""
    found = others = 0
    for seed in SEEDS:
        target = 20 + seed % (DAYS - 20)
        judged = judge(simulated(seed, planted=(target, factor)))
        found += judged.days[target].status == status
        others += judged.anomalies - (judged.days[target].status in ("high", "low"))
    print(f"x{factor}: {found}/{len(SEEDS)} found, {others} other days flagged")
    assert found / len(SEEDS) >= at_least
    assert others <= 0.02 * len(SEEDS)


def test_the_first_days_warm_up_and_flagged_days_leave_the_baseline() -> None:
    series = simulated(3)
    # Day 30 (a Wednesday) collapses; day 37 is the next Wednesday.
    series[30] = DayCounts(series[30].day, 500, 20)
    judged = judge(series)
    assert [d.status for d in judged.days[:14]] == ["warming_up"] * 14
    assert judged.days[14].status != "warming_up"  # 14 days before it, two of them Mondays
    assert judged.days[30].status == "low" and judged.anomalies == 1
    wednesdays = [i for i in range(37 - 28, 37) if series[i].day.weekday() == 2 and i != 30]
    assert len(wednesdays) == 3
    n = np.array([series[i].entered for i in wednesdays])
    x = np.array([series[i].converted for i in wednesdays])
    assert judged.days[37].expected == pytest.approx(pooled_rate(n, x), rel=1e-12)
    # Without weekly seasonality, the expected rate is every usable day's.
    flat = judge(series, BandSettings(seasonality="none"))
    kept = [i for i in range(37 - 28, 37) if i != 30]
    n = np.array([series[i].entered for i in kept])
    x = np.array([series[i].converted for i in kept])
    assert flat.days[37].expected == pytest.approx(pooled_rate(n, x), rel=1e-12)


def test_incomplete_and_low_volume_days_are_not_judged_nor_counted() -> None:
    series = simulated(5)
    series[40] = DayCounts(series[40].day, 29, 0)  # a rate of 0, but too few entries
    series[-1] = DayCounts(series[-1].day, 400, 3, complete=False)  # in progress
    judged = judge(series)
    assert judged.days[40].status == "insufficient_data" and judged.days[40].rate == 0
    assert judged.days[-1].status == "in_progress" and judged.days[-1].expected is None
    assert judged.judgeable == DAYS - 14 - 2
    assert judged.day_alpha == pytest.approx(0.01 / judged.judgeable)
    assert judge(series, BandSettings(min_entered=10)).days[40].expected is not None


# -- invariants ---------------------------------------------------------------------------------


@st.composite
def series_of(draw: st.DrawFn) -> list[DayCounts]:
    length = draw(st.integers(0, 60))
    rate = draw(st.floats(0, 1))
    days = []
    for i in range(length):
        n = draw(st.one_of(st.integers(0, 40), st.integers(0, 2000)))
        mode = draw(st.sampled_from(["typical", "any"]))
        x = round(n * rate) if mode == "typical" else draw(st.integers(0, n))
        days.append(DayCounts(MONDAY + timedelta(days=i), n, x, draw(st.booleans()) or i < length - 2))
    return days


band_settings = st.builds(
    BandSettings,
    baseline_days=st.integers(14, 40),
    min_baseline_days=st.integers(2, 14),
    confidence=st.sampled_from([0.5, 0.9, 0.99, 0.999]),
    min_entered=st.integers(1, 50),
    seasonality=st.sampled_from(["weekly", "none"]),
)


@settings(max_examples=300, deadline=None)
@given(series=series_of(), chosen=band_settings)
def test_the_statuses_and_bands_hold_together(series: list[DayCounts], chosen: BandSettings) -> None:
    judged = judge(series, chosen)
    assert judged == judge(series, chosen)  # deterministic
    assert [(d.day, d.entered, d.converted) for d in judged.days] == [
        (d.day, d.entered, d.converted) for d in series
    ]
    assert judged.anomalies == sum(d.status in ("high", "low") for d in judged.days)
    assert judged.anomalies <= judged.judgeable
    for asked, day in zip(series, judged.days, strict=True):
        if not asked.complete:
            assert day.status == "in_progress"
        elif asked.entered < chosen.min_entered:
            assert day.status == "insufficient_data"  # never flagged
        if day.status not in ("normal", "high", "low"):
            assert (day.expected, day.lower, day.upper, day.p_value) == (None, None, None, None)
            continue
        assert day.rate is not None and day.lower is not None and day.upper is not None
        assert day.p_value is not None and day.z is not None and day.expected is not None
        assert 0 <= day.lower <= day.upper <= 1 and 0 < day.expected < 1 and 0 <= day.p_value <= 1
        # Flagged exactly when the rate is outside the band, on the side the status says.
        outside = "low" if day.rate < day.lower else "high" if day.rate > day.upper else "normal"
        assert day.status == outside
        assert (day.p_value < judged.day_alpha) == (day.status != "normal")


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10**6), target=st.integers(14, DAYS - 1))
def test_a_day_without_any_conversion_among_200_is_always_low(seed: int, target: int) -> None:
    series = simulated(seed)
    series[target] = DayCounts(series[target].day, max(200, series[target].entered), 0)
    assert judge(series).days[target].status == "low"


def test_bad_settings_and_series_are_refused_naming_the_field() -> None:
    for chosen, field in [
        (BandSettings(baseline_days=1, min_baseline_days=1), "baseline_days"),
        (BandSettings(baseline_days=10, min_baseline_days=10), "baseline_days"),  # weekly needs 14
        (BandSettings(min_baseline_days=29), "min_baseline_days"),
        (BandSettings(confidence=1.0), "confidence"),
        (BandSettings(confidence=0.2), "confidence"),
        (BandSettings(min_entered=0), "min_entered"),
    ]:
        with pytest.raises(AnomalyError) as raised:
            judge([], chosen)
        assert raised.value.field == field
    for series, field in [
        ([DayCounts(MONDAY, 3, 4)], "days[0]"),
        ([DayCounts(MONDAY, 3, 1), DayCounts(MONDAY + timedelta(days=2), 3, 1)], "days[1]"),
    ]:
        with pytest.raises(AnomalyError) as raised:
            judge(series)
        assert raised.value.field == field


# -- against plain references -------------------------------------------------------------------


def reference_band(
    entered: int, converted: int, base_n: list[int], base_x: list[int], rho: float, alpha: float
) -> tuple[int, int, float]:
    """The band and p-value by the formulas written out: the beta-binomial's probabilities from
    log-gamma functions one by one, its tails summed in plain Python."""
    mu = (sum(base_x) + 0.5) / (sum(base_n) + 1)
    total = sum(base_n)
    var_mu = mu * (1 - mu) * sum(n * (1 + (n - 1) * rho) for n in base_n) / total**2
    variance = entered * mu * (1 - mu) * (1 + (entered - 1) * rho) + entered**2 * var_mu
    r = (variance / (entered * mu * (1 - mu)) - 1) / (entered - 1)
    a, b = mu * (1 / r - 1), (1 - mu) * (1 / r - 1)

    def log_beta(p: float, q: float) -> float:
        return math.lgamma(p) + math.lgamma(q) - math.lgamma(p + q)

    pmf = [
        math.exp(math.lgamma(entered + 1) - math.lgamma(k + 1) - math.lgamma(entered - k + 1)
                 + log_beta(k + a, entered - k + b) - log_beta(a, b))
        for k in range(entered + 1)
    ]  # fmt: skip
    below = sum(pmf[: converted + 1])
    above = sum(pmf[converted:])
    lower = next(k for k in range(entered + 1) if sum(pmf[: k + 1]) >= alpha / 2)
    upper = max(k for k in range(entered + 1) if sum(pmf[k:]) >= alpha / 2)
    return lower, upper, min(1.0, 2 * min(below, above))


@pytest.mark.parametrize(
    ("entered", "converted", "base_n", "base_x", "rho", "alpha"),
    [
        (200, 35, [180, 220, 260, 150], [55, 70, 75, 48], 0.0, 0.001),
        (200, 90, [180, 220, 260, 150], [55, 70, 75, 48], 0.01, 0.001),
        (50, 0, [60, 40, 55], [2, 0, 1], 0.0, 0.01),
        (1000, 520, [900, 1100], [400, 480], 0.003, 1e-4),
        (31, 30, [30, 30, 30], [28, 29, 30], 0.05, 0.05),
    ],
)
def test_the_band_equals_the_plain_reference(
    entered: int, converted: int, base_n: list[int], base_x: list[int], rho: float, alpha: float
) -> None:
    band = day_band(entered, converted, np.array(base_n), np.array(base_x), rho, alpha)
    lower, upper, p_value = reference_band(entered, converted, base_n, base_x, rho, alpha)
    assert (band.lower, band.upper) == (lower, upper)
    assert band.p_value == pytest.approx(p_value, rel=1e-6, abs=1e-300)
    assert band.status == ("low" if converted < lower else "high" if converted > upper else "normal")


def test_with_a_huge_baseline_and_no_dispersion_the_band_is_the_binomial_s() -> None:
    """The baseline's uncertainty vanishes: the band is the binomial quantiles (math.comb)."""
    n, rate, alpha = 300, 0.25, 0.002
    base_n = np.array([10**9])
    base_x = np.array([round(rate * 10**9)])
    band = day_band(n, 75, base_n, base_x, 0.0, alpha)
    mu = pooled_rate(base_n, base_x)
    pmf = [math.comb(n, k) * mu**k * (1 - mu) ** (n - k) for k in range(n + 1)]
    lower = next(k for k in range(n + 1) if sum(pmf[: k + 1]) >= alpha / 2)
    upper = max(k for k in range(n + 1) if sum(pmf[k:]) >= alpha / 2)
    assert (band.lower, band.upper) == (lower, upper)
    assert 45 < lower < 75 < upper < 105


@pytest.mark.parametrize("rho", [0.0, 0.01, 0.05])
def test_the_overdispersion_estimate_is_about_the_simulated_rho(rho: float) -> None:
    """Averaged over 400 seeded baselines of 28 days in 7 weekday groups of different rates."""
    rng = np.random.default_rng(11)
    estimates = []
    for _ in range(400):
        groups = np.arange(28) % 7
        n = rng.integers(50, 800, size=28)
        mean = 0.1 + 0.05 * groups
        p = mean if rho == 0 else rng.beta(mean * (1 / rho - 1), (1 - mean) * (1 / rho - 1))
        x = rng.binomial(n, p)
        estimates.append(overdispersion(n, x, groups))
        # The band's rho: one standard error above, sqrt(2 df) / B, never below the estimate.
        assert cautious_overdispersion(n, x, groups) > estimates[-1]
    average = float(np.mean(estimates))
    # At rho = 0 the estimate is clipped at 0, so its average is a little above it.
    assert average == pytest.approx(rho, abs=0.002 if rho == 0 else 0.15 * rho)


@pytest.mark.parametrize(("entered", "mu", "rho"), [(300_000, 0.3, 0.0), (1_000_000, 0.02, 0.001)])
def test_a_big_day_s_window_of_counts_gives_the_whole_support_s_tails(
    entered: int, mu: float, rho: float
) -> None:
    """Above 200,000 entries only mean ± 40 sd is summed: the tails agree with the whole support's."""
    variance = entered * mu * (1 - mu) * (1 + (entered - 1) * rho) * 1.01
    first, cdf, sf = predictive(entered, mu, variance)
    assert len(cdf) < entered / 2  # a window, not the whole support
    _, whole_cdf, whole_sf = predictive(entered, mu, variance, full_support=entered)
    window = slice(first, first + len(cdf))
    # Far below any threshold (1e-30) the two sums' rounding differs; above it they agree.
    np.testing.assert_allclose(cdf, whole_cdf[window], rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(sf, whole_sf[window], rtol=1e-6, atol=1e-30)
    # Outside the window the whole support holds nothing that matters.
    assert whole_cdf[: window.start].sum() < 1e-30 and whole_sf[window.stop :].sum() < 1e-30
