"""The sessionizer's pacing (sessionizer/runner.py): rounds no closer than the interval, and cycles
busy at most `max_busy_fraction` of the time, so that ingestion on the same machine keeps the rest."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, cast

import pytest

from headwater.sessionizer.runner import Sessionizer, pause_after
from headwater.sessionizer.settings import SessionizerSettings


def settings(interval: float, max_busy: float) -> SessionizerSettings:
    return SessionizerSettings("chdb://unused", interval_seconds=interval, max_busy_fraction=max_busy)


def test_a_short_round_waits_out_the_interval() -> None:
    assert pause_after(1.0, settings(10, 0.25)) == pytest.approx(9.0)


def test_a_long_round_is_followed_by_a_pause_that_keeps_the_busy_fraction() -> None:
    assert pause_after(4.0, settings(10, 0.25)) == pytest.approx(12.0)  # busy 4 s of 16
    assert pause_after(4.0, settings(10, 0.5)) == pytest.approx(6.0)  # the interval's rest wins
    assert pause_after(4.0, settings(1, 0.5)) == pytest.approx(4.0)


def test_no_limit_leaves_only_the_interval() -> None:
    assert pause_after(4.0, settings(10, 1.0)) == pytest.approx(6.0)
    assert pause_after(12.0, settings(10, 1.0)) == 0.0


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_a_busy_fraction_outside_0_1_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="max_busy_fraction"):
        settings(10, fraction)


async def test_the_loop_starts_rounds_no_closer_than_the_busy_fraction_allows() -> None:
    round_seconds, fraction = 0.2, 0.25
    sessionizer = Sessionizer(cast(Any, None), cast(Any, None), settings(0.05, fraction), lambda: {})
    starts: list[float] = []

    async def slow_round() -> None:
        starts.append(time.monotonic())
        await asyncio.sleep(round_seconds)

    sessionizer.run_round = slow_round  # type: ignore[method-assign]
    await sessionizer.start()
    await asyncio.sleep(2.0)
    await sessionizer.stop()
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert len(gaps) >= 1
    assert min(gaps) >= round_seconds / fraction * 0.95, gaps  # 0.8 s: busy 0.2 s of each
