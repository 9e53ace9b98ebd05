"""Anomalies of a daily conversion rate: the days whose rate leaves the band the days before it
predict (docs/patterns.md, "Anomalies").

Each day's count of conversions x out of n entered is judged against a beta-binomial predictive
distribution built from its baseline, the usable days of the `baseline_days` before it (complete,
at least `min_entered` entries, not flagged themselves, so an outage does not drag the band of
the next weeks down):

- **expected rate** μ: the baseline's pooled rate, (Σx + ½) / (Σn + 1) (a Jeffreys-style
  estimate: a baseline with no conversion still leaves room for one), over the baseline days of
  the same weekday when `seasonality` is `weekly`;
- **over-dispersion** rho: real conversion rates move from day to day more than binomial noise
  says. rho (the intra-day correlation of a beta-binomial) is estimated by
  the method of moments: Pearson's X² of the usable days about their (weekday) group's rate has
  expectation (k - groups) + B·rho, B exact for the days' volumes (`overdispersion`); rho = max(0, ...)
  plus one standard error (`cautious_overdispersion`). It reads the usable days of the last 91
  days (`DISPERSION_DAYS`), not only the baseline's.
- **the day's variance** n μ(1-μ)(1 + (n-1)rho) plus n² Var(μ̂) (the baseline's own uncertainty);
  the predictive distribution is the beta-binomial with mean μ and that variance, its tails summed
  exactly (discrete and skewed near 0 and 1, where a normal band is wrong).

A day is flagged when its two-sided p-value is below (1 - confidence) / m, m the days of the range
that can be judged (Bonferroni): on a quiet series the chance that any day at all is flagged is at
most 1 - confidence under the model. The band [lower, upper] is exactly the range of rates that
would not be flagged. Deterministic: no sampling anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt

Status = Literal["normal", "high", "low", "insufficient_data", "warming_up", "in_progress"]
Seasonality = Literal["weekly", "none"]
Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

# Above this many entries a day's distribution is summed over mean ± _SPAN_SD standard deviations,
# not its whole support: the mass outside is far below any threshold a band uses.
_FULL_SUPPORT = 200_000
_SPAN_SD = 40.0
# rho reads the usable days of this many days before the day (or of the baseline, if longer): how
# much a rate moves from day to day is a property of the funnel, slow to change, and 21 degrees of
# freedom (28 days in 7 weekday groups) estimate it so loosely that a quiet over-dispersed series
# (rho = 0.002) was flagged 1.5 times as often as with 91 days.
DISPERSION_DAYS = 91
# A weekday's expected rate comes from at least this many of its days.
_MIN_SAME_WEEKDAY = 2


class AnomalyError(ValueError):
    """A setting or series that cannot be judged; `field` names the setting at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class DayCounts:
    day: date
    entered: int
    converted: int
    complete: bool = True  # False: later events can still convert the day's entries


@dataclass(frozen=True, slots=True)
class BandSettings:
    baseline_days: int = 28
    min_baseline_days: int = 14
    confidence: float = 0.99
    min_entered: int = 30
    seasonality: Seasonality = "weekly"

    def check(self) -> None:
        if not 2 <= self.baseline_days <= 365:
            raise AnomalyError("baseline_days", "baseline_days must be from 2 to 365")
        if not 2 <= self.min_baseline_days <= self.baseline_days:
            raise AnomalyError("min_baseline_days", "min_baseline_days must be from 2 to baseline_days")
        if not 0.5 <= self.confidence < 1:
            raise AnomalyError("confidence", "confidence must be at least 0.5 and below 1")
        if self.min_entered < 1:
            raise AnomalyError("min_entered", "min_entered must be at least 1")
        if self.seasonality == "weekly" and self.baseline_days < 7 * _MIN_SAME_WEEKDAY:
            raise AnomalyError("baseline_days", "a weekly baseline needs at least 14 days")


@dataclass(frozen=True, slots=True)
class JudgedDay:
    day: date
    entered: int
    converted: int
    status: Status
    rate: float | None  # converted / entered; None when nobody entered
    # The rest only for a judged day (normal, high or low).
    expected: float | None = None
    lower: float | None = None
    upper: float | None = None
    p_value: float | None = None  # two-sided, of this day alone
    z: float | None = None  # (converted - entered·expected) / the predictive standard deviation


@dataclass(frozen=True, slots=True)
class Judgement:
    days: list[JudgedDay]
    judgeable: int  # m of the Bonferroni correction
    day_alpha: float  # a day is flagged when its p-value is below this
    anomalies: int


def judge(series: Sequence[DayCounts], settings: BandSettings | None = None) -> Judgement:
    """Each day of `series` (consecutive days, in order) judged against its baseline."""
    settings = settings or BandSettings()
    settings.check()
    _check_series(series)
    n = np.array([d.entered for d in series], dtype=np.int64)
    x = np.array([d.converted for d in series], dtype=np.int64)
    weekday = np.array([d.day.weekday() for d in series], dtype=np.int64)
    weekly = settings.seasonality == "weekly"
    usable = np.array([d.complete and d.entered >= settings.min_entered for d in series], dtype=bool)
    # m counts every day that could be judged, flags aside: flags only shrink baselines, so the
    # days actually judged are at most m and the correction stays valid.
    judgeable = sum(
        1
        for i in range(len(series))
        if usable[i] and _has_history(_baseline(usable, i, settings.baseline_days), weekday, i, settings)
    )
    day_alpha = (1 - settings.confidence) / max(judgeable, 1)
    kept = usable.copy()  # usable and not flagged
    days = []
    for i, counts in enumerate(series):
        rate = counts.converted / counts.entered if counts.entered else None
        if not counts.complete:
            days.append(JudgedDay(counts.day, counts.entered, counts.converted, "in_progress", rate))
            continue
        if not usable[i]:
            days.append(JudgedDay(counts.day, counts.entered, counts.converted, "insufficient_data", rate))
            continue
        base = _baseline(kept, i, settings.baseline_days)
        if not _has_history(base, weekday, i, settings):
            days.append(JudgedDay(counts.day, counts.entered, counts.converted, "warming_up", rate))
            continue
        wide = _baseline(kept, i, max(settings.baseline_days, DISPERSION_DAYS))
        groups = weekday[wide] if weekly else np.zeros(len(wide), dtype=np.int64)
        rho = cautious_overdispersion(n[wide], x[wide], groups)
        same = base[weekday[base] == weekday[i]] if weekly else base
        band = day_band(counts.entered, counts.converted, n[same], x[same], rho, day_alpha)
        if band.status != "normal":
            kept[i] = False
        days.append(
            JudgedDay(
                counts.day, counts.entered, counts.converted, band.status, rate, band.expected,
                band.lower / counts.entered, band.upper / counts.entered, band.p_value, band.z,
            )
        )  # fmt: skip
    anomalies = sum(1 for d in days if d.status in ("high", "low"))
    return Judgement(days, judgeable, day_alpha, anomalies)


def _check_series(series: Sequence[DayCounts]) -> None:
    for index, counts in enumerate(series):
        if not 0 <= counts.converted <= counts.entered:
            raise AnomalyError(f"days[{index}]", "converted must be from 0 to entered")
        if index and counts.day != series[index - 1].day + timedelta(days=1):
            raise AnomalyError(f"days[{index}]", "the days must be consecutive, in order")


def _baseline(kept: npt.NDArray[np.bool_], i: int, baseline_days: int) -> Ints:
    start = max(0, i - baseline_days)
    return np.flatnonzero(kept[start:i]).astype(np.int64) + start


def _has_history(base: Ints, weekday: Ints, i: int, settings: BandSettings) -> bool:
    if len(base) < settings.min_baseline_days:
        return False
    if settings.seasonality == "weekly":
        return int(np.count_nonzero(weekday[base] == weekday[i])) >= _MIN_SAME_WEEKDAY
    return True


def pooled_rate(n: Ints, x: Ints) -> float:
    """(Σx + ½) / (Σn + 1): the pooled rate, never exactly 0 or 1."""
    return (float(x.sum()) + 0.5) / (float(n.sum()) + 1.0)


def overdispersion(n: Ints, x: Ints, groups: Ints) -> float:
    """rho by the method of moments over days in groups (each with a rate of its own), at least 0.

    Within a group of k days with entries n_i, X² = Σ (x_i - n_i μ̂)² / (n_i μ (1-μ)) about the
    pooled μ̂ has expectation (k - 1) + B·rho for a beta-binomial of intra-day correlation rho:
    x_i - n_i μ̂ = (1 - n_i/N) x_i - (n_i/N) Σ_{j≠i} x_j and Var x_j = n_j μ(1-μ)(1 + (n_j-1) rho), so
    B = Σ_i [(1 - n_i/N)² (n_i - 1) + (n_i/N²) Σ_{j≠i} n_j (n_j - 1)]. Summed over the groups of
    two days or more; rho = (X² - degrees of freedom) / B."""
    chi2, degrees, b = _moments(n, x, groups)
    return 0.0 if b <= 0 else min(max(0.0, (chi2 - degrees) / b), 0.999)


def cautious_overdispersion(n: Ints, x: Ints, groups: Ints) -> float:
    """`overdispersion` plus one standard error, sqrt(2 df) / B (X²'s spread with df degrees of
    freedom): the rho a band uses, so that an estimate on the low side does not make it too narrow.
    In the simulations of tests/test_patterns_anomalies.py it took quiet over-dispersed series
    (rho = 0.002) with any flag from 4% to 0.3%, for 82% → 76% of halved days found."""
    chi2, degrees, b = _moments(n, x, groups)
    if b <= 0:
        return 0.0
    return min(max(0.0, (chi2 - degrees) / b) + math.sqrt(2 * degrees) / b, 0.999)


def _moments(n: Ints, x: Ints, groups: Ints) -> tuple[float, int, float]:
    """X², its degrees of freedom and B (overdispersion) over the groups of two days or more."""
    _, group = np.unique(groups, return_inverse=True)
    nf, xf = n.astype(np.float64), x.astype(np.float64)
    days = np.bincount(group)
    total = np.bincount(group, nf)
    judged = ((days >= 2) & (total > 0))[group]  # the days of groups that say something
    if not judged.any():
        return 0.0, 0, 0.0
    nf, xf, group = nf[judged], xf[judged], group[judged]
    total = np.bincount(group, nf)[group]
    converted = np.bincount(group, xf)[group]
    mu = (converted + 0.5) / (total + 1.0)  # in the denominator: never 0
    chi2 = float(np.sum((xf - nf * converted / total) ** 2 / (nf * mu * (1 - mu))))
    degrees = len(nf) - len(np.unique(group))
    pairs = nf * (nf - 1)
    share = nf / total
    others = np.bincount(group, pairs)[group] - pairs  # Σ_{j≠i} n_j (n_j - 1)
    b = float(np.sum((1 - share) ** 2 * (nf - 1) + share / total * others))
    return chi2, degrees, b


@dataclass(frozen=True, slots=True)
class Band:
    expected: float
    lower: int  # counts: converted below lower is low, above upper is high
    upper: int
    p_value: float
    z: float
    status: Status


def day_band(entered: int, converted: int, base_n: Ints, base_x: Ints, rho: float, alpha: float) -> Band:
    """The day's band at two-sided level `alpha` from its baseline days' counts and rho."""
    mu = pooled_rate(base_n, base_x)
    nf = base_n.astype(np.float64)
    var_mu = mu * (1 - mu) * float(np.sum(nf * (1 + (nf - 1) * rho))) / float(nf.sum()) ** 2
    variance = entered * mu * (1 - mu) * (1 + (entered - 1) * rho) + entered**2 * var_mu
    low_k, cdf, sf = predictive(entered, mu, variance)
    below = _at(cdf, converted - low_k, 0.0, 1.0)  # P(X <= converted)
    above = _at(sf, converted - low_k, 1.0, 0.0)  # P(X >= converted)
    p_value = min(1.0, 2 * min(below, above))
    # The smallest count whose lower tail reaches alpha/2; the largest whose upper tail does.
    lower = low_k + int(np.searchsorted(cdf, alpha / 2, side="left"))
    upper = low_k + int(np.flatnonzero(sf >= alpha / 2)[-1]) if np.any(sf >= alpha / 2) else low_k
    status: Status = "low" if below < alpha / 2 else "high" if above < alpha / 2 else "normal"
    z = (converted - entered * mu) / math.sqrt(variance)
    return Band(mu, min(lower, entered), upper, p_value, z, status)


def _at(values: Floats, index: int, before: float, after: float) -> float:
    if index < 0:
        return before
    if index >= len(values):
        return after
    return float(values[index])


def predictive(
    entered: int, mu: float, variance: float, full_support: int = _FULL_SUPPORT
) -> tuple[int, Floats, Floats]:
    """The beta-binomial of `entered` trials with mean rate `mu` and the given variance of the
    count: its first count k0 and, from k0 on, P(X <= k) and P(X >= k). Up to `full_support`
    trials over every count, above over mean ± 40 standard deviations."""
    n = entered
    binomial = n * mu * (1 - mu)
    # The intra-day correlation that gives the variance (any value for a single trial).
    rho = (variance / binomial - 1) / (n - 1) if n > 1 else 0.5
    rho = min(max(rho, 1e-12), 1 - 1e-9)
    a, b = mu * (1 / rho - 1), (1 - mu) * (1 / rho - 1)
    if n <= full_support:
        first, last = 0, n
    else:
        spread = _SPAN_SD * math.sqrt(variance)
        first, last = max(0, math.floor(n * mu - spread)), min(n, math.ceil(n * mu + spread))
    k = np.arange(first, last, dtype=np.float64)
    # P(k+1) / P(k) = (n-k)/(k+1) · (k+a)/(n-k-1+b): exact in log space, no factorials.
    ratios = np.log(n - k) - np.log(k + 1) + np.log(k + a) - np.log(n - k - 1 + b)
    log_pmf = np.concatenate(([0.0], np.cumsum(ratios)))
    pmf = np.exp(log_pmf - log_pmf.max())
    pmf /= pmf.sum()
    cdf = np.minimum(np.cumsum(pmf), 1.0)
    sf = np.minimum(np.cumsum(pmf[::-1])[::-1], 1.0)
    return first, cdf, sf
