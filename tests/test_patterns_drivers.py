"""What converters do differently (issue 21): patterns planted only in converters come out as
drivers above patterns planted equally in both groups; on the null data set nothing does."""

from __future__ import annotations

import random
import time

import pytest

from headwater.analytics.patterns.drivers import DriverSettings, drivers, split
from headwater.analytics.patterns.generator import GeneratorSettings, generate, null_dataset
from headwater.analytics.patterns.prefixspan import MiningTimedOut, contains
from headwater.analytics.patterns.significance import benjamini_hochberg, fisher_exact


def one_step_off(found: tuple[str, ...], planted: tuple[str, ...]) -> bool:
    return (
        found == planted
        or (len(found) == len(planted) - 1 and contains(planted, found))
        or (len(found) == len(planted) + 1 and contains(found, planted))
    )


def test_fisher_exact_equals_published_values() -> None:
    assert fisher_exact(3, 1, 1, 3) == pytest.approx(0.4857142857)  # the lady tasting tea
    assert fisher_exact(1, 9, 11, 3) == pytest.approx(0.0027594562)  # R's fisher.test, scipy
    assert fisher_exact(5, 5, 5, 5) == pytest.approx(1.0)


def test_benjamini_hochberg_equals_a_hand_computation() -> None:
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_split_keeps_the_part_before_the_goal() -> None:
    before, converted = split([["a", "b", "goal", "c"], ["a", "c"]], "goal")
    assert before == [["a", "b"], ["a", "c"]] and converted == [True, False]


def test_patterns_planted_only_in_converters_rank_above_those_planted_in_both() -> None:
    data = generate(GeneratorSettings(sessions=20_000, seed=7))
    found = drivers(data.journeys, data.goal)
    ranks = {
        pattern: [i for i, d in enumerate(found) if one_step_off(d.steps, pattern.steps)]
        for pattern in data.planted
    }
    converter_only = [min(ranks[p]) for p in data.converter_only if ranks[p]]
    assert len(converter_only) == len(data.converter_only), [d.steps for d in found]
    shared = [min(ranks[p]) for p in data.shared if ranks[p]]
    assert max(converter_only) < min(shared, default=len(found))
    for driver in found:
        assert driver.q_value <= 0.05 and driver.raises
        assert f"{driver.converters_with / driver.converters:.1%} of converters" in driver.reason


def test_on_the_null_data_set_nothing_is_significant() -> None:
    data = null_dataset(sessions=20_000, seed=1)
    assert drivers(data.journeys, data.goal) == []


def test_the_drivers_mining_stops_at_its_deadline() -> None:
    data = generate(GeneratorSettings(sessions=2_000, seed=5))
    assert drivers(data.journeys, data.goal, DriverSettings(deadline=time.monotonic() + 600))
    with pytest.raises(MiningTimedOut):
        drivers(data.journeys, data.goal, DriverSettings(deadline=time.monotonic() - 1))


def test_a_pattern_mixing_the_steps_of_two_drivers_is_left_out() -> None:
    """Converters hold A, B or both (A before B); a pattern taking a step of A then a step of B is
    as strongly tied to converting as they are, but only through them: not a driver of its own."""
    rng = random.Random(3)
    a, b = ("a1", "a2", "a3"), ("b1", "b2", "b3")

    def noise(k: int) -> list[str]:
        return [f"n{rng.randrange(30)}" for _ in range(k)]

    def with_steps(steps: tuple[str, ...]) -> list[str]:
        """Noise with `steps` in order at random places, then the goal."""
        journey = noise(6)
        places = sorted(rng.randrange(len(journey) + 1) for _ in steps)
        for offset, (place, step) in enumerate(zip(places, steps, strict=True)):
            journey.insert(place + offset, step)
        return [*journey, "goal"]

    journeys: list[list[str]] = []
    for _ in range(400):
        journeys += [with_steps(a), with_steps(b), with_steps(a + b)]
    for _ in range(4_000):
        # the others: the steps of A and B one at a time, never whole
        journeys.append([*noise(7), rng.choice(a + b), *noise(2)])
    found = [d.steps for d in drivers(journeys, "goal")]
    assert any(one_step_off(steps, a) for steps in found) and any(one_step_off(steps, b) for steps in found)
    mixed = [s for s in found if any(x in a for x in s) and any(x in b for x in s)]
    assert not mixed, found
