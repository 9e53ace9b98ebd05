"""Pattern mining (issue 21): on the generator's data the suggestions find what was planted and
little else; on small random inputs the miner's supports and closed sets equal a brute force."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from itertools import combinations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.analytics.patterns.analysis import PatternsQuestion, analyse
from headwater.analytics.patterns.generator import Dataset, GeneratorSettings, generate
from headwater.analytics.patterns.journeys import Limits, TooManyJourneys, encode
from headwater.analytics.patterns.mining import MiningSettings, Suggestion, suggest
from headwater.analytics.patterns.prefixspan import (
    MiningTimedOut,
    TooManyPatterns,
    closed,
    contains,
    frequent_patterns,
    holders_of,
    maximal,
    occurrence_index,
)
from headwater.analytics.patterns.source import Journeys
from headwater.control.schemas import FunnelDefinitionSpec


def one_step_off(suggested: Sequence[str], planted: Sequence[str]) -> bool:
    """The planted sequence itself, or a sub/super-sequence of it one step shorter or longer."""
    s, p = tuple(suggested), tuple(planted)
    return s == p or (len(s) == len(p) - 1 and contains(p, s)) or (len(s) == len(p) + 1 and contains(s, p))


def recall_precision(suggestions: Sequence[Suggestion], data: Dataset) -> tuple[float, float]:
    planted = [p.steps for p in data.planted]
    found = sum(any(one_step_off(s.steps, p) for s in suggestions) for p in planted)
    right = sum(any(one_step_off(s.steps, p) for p in planted) for s in suggestions)
    return found / len(planted), right / max(1, len(suggestions))


@pytest.fixture(scope="module")
def data() -> Dataset:
    return generate(GeneratorSettings(sessions=50_000, seed=7))


def test_generator_is_deterministic_for_a_seed() -> None:
    small = GeneratorSettings(sessions=500, seed=3)
    assert generate(small) == generate(small)
    assert generate(small) != generate(GeneratorSettings(sessions=500, seed=4))


def test_generator_plants_what_it_says(data: Dataset) -> None:
    assert len(data.journeys) == 50_000
    steps = {s for j in data.journeys for s in j} - {data.goal}
    assert 50 <= len(steps) <= 200
    for pattern in data.planted:
        assert 3 <= len(pattern.steps) <= 6 and 0.05 <= pattern.support <= 0.20
        holders = [
            c for j, c in zip(data.journeys, data.converted, strict=True) if contains(j, pattern.steps)
        ]
        assert len(holders) >= pattern.support * len(data.journeys)
        if pattern.converters_only:
            assert sum(holders) / len(holders) > 0.9


def test_top_20_suggestions_recover_the_planted_patterns(data: Dataset) -> None:
    suggestions = suggest(data.journeys, MiningSettings(top=20))
    recall, precision = recall_precision(suggestions, data)
    assert recall >= 0.9, [s.steps for s in suggestions]
    assert precision >= 0.5, [s.steps for s in suggestions]
    assert [s.leverage for s in suggestions] == sorted((s.leverage for s in suggestions), reverse=True)


def test_a_suggestion_is_a_valid_funnel_definition_with_its_reason(data: Dataset) -> None:
    suggestion = suggest(data.journeys[:5000], MiningSettings(top=1))[0]
    spec = msgspec.convert(suggestion.funnel(), FunnelDefinitionSpec)
    assert [s.value for s in spec.steps] == list(suggestion.steps)
    assert {s.kind for s in spec.steps} <= {"page", "event"}
    assert all((s.kind == "page") == s.value.startswith("/") for s in spec.steps)
    assert f"in {suggestion.support} journeys" in suggestion.reason
    assert suggestion.step_counts[-1] == suggestion.support


def brute_force(journeys: list[list[int]], max_length: int) -> dict[tuple[int, ...], int]:
    support: dict[tuple[int, ...], int] = {}
    for journey in journeys:
        subs = {sub for size in range(1, max_length + 1) for sub in combinations(journey, size)}
        for sub in subs:
            support[sub] = support.get(sub, 0) + 1
    return support


journeys_strategy = st.lists(st.lists(st.integers(0, 3), max_size=6), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(journeys=journeys_strategy, min_count=st.integers(1, 4), max_length=st.integers(1, 4))
def test_supports_and_closedness_equal_a_brute_force(
    journeys: list[list[int]], min_count: int, max_length: int
) -> None:
    everything = brute_force(journeys, max_length)
    frequent = {p: s for p, s in everything.items() if s >= min_count}
    found = frequent_patterns(
        journeys, min_count, max_length, 10_000, labels=[len(j) % 2 == 0 for j in journeys]
    )
    assert {p: c.support for p, c in found.items()} == frequent
    index = occurrence_index(journeys)
    for pattern, counts in found.items():
        assert counts.positive == sum(len(j) % 2 == 0 and contains(j, pattern) for j in journeys)
        assert index is not None
        held = [i for i, journey in enumerate(journeys) if contains(journey, pattern)]
        assert holders_of(index, pattern).tolist() == held
    longer = {p: [q for q in frequent if len(q) > len(p) and contains(q, p)] for p in frequent}
    assert closed(found) == {p for p in frequent if all(frequent[q] < frequent[p] for q in longer[p])}
    assert maximal(found) == {p for p in frequent if not longer[p]}


def test_limits_refuse_too_many_journeys_and_patterns_and_cut_long_journeys() -> None:
    with pytest.raises(TooManyJourneys):
        suggest([["a", "b"]] * 3, MiningSettings(limits=Limits(max_journeys=2)))
    with pytest.raises(TooManyPatterns):
        suggest([["a", "b", "c", "d"]] * 3, MiningSettings(limits=Limits(max_patterns=5)))
    assert encode([["a", "b", "c"]], Limits(max_steps=2)).journeys == ((0, 1),)


def test_mining_stops_at_its_deadline_and_gives_the_same_patterns_before_it() -> None:
    journeys = [[i % 7, (i * 3) % 5 + 7, i % 4, (i * 5) % 6 + 3] for i in range(300)]
    unbounded = frequent_patterns(journeys, 2, 4, 10_000)
    assert frequent_patterns(journeys, 2, 4, 10_000, deadline=time.monotonic() + 600) == unbounded
    with pytest.raises(MiningTimedOut):
        frequent_patterns(journeys, 2, 4, 10_000, deadline=time.monotonic() - 1)
    data = generate(GeneratorSettings(sessions=2_000, seed=5))
    steps = Journeys(tuple(tuple(f"event:{s}" for s in j) for j in data.journeys), 0)
    question = PatternsQuestion(goal=f"event:{data.goal}", next_step=False)
    with pytest.raises(MiningTimedOut):
        analyse(steps, replace(question, limits=Limits(max_seconds=1e-9)))
    answer = analyse(steps, replace(question, limits=Limits(max_seconds=600)))
    assert answer["patterns"] and answer == analyse(steps, question)


def test_maximal_suggestions_hold_no_frequent_super_pattern() -> None:
    journeys = [["a", "x", "b", "c"]] * 40 + [["a", "b"]] * 40 + [[f"n{i}", f"m{i}"] for i in range(400)]
    closed_ones = {s.steps for s in suggest(journeys, MiningSettings(min_z=1, redundancy=0.0))}
    maximal_ones = {
        s.steps for s in suggest(journeys, MiningSettings(kind="maximal", min_z=1, redundancy=0.0))
    }
    assert ("a", "x", "b", "c") in maximal_ones and ("a", "b") not in maximal_ones
    assert ("a", "b") in closed_ones  # 80 journeys, more than its super-patterns' 40
