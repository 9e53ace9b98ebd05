"""One pattern-discovery question over journeys read by source.py: suggested funnels, drivers of a
goal and the next-step model's accuracy, as the API's answer (docs/patterns.md, "The API").

Steps travel as `kind:value` (source.py); the answer shows each step as its text (an event's name,
a page's path) with its kind beside it, and every suggestion carries a funnel definition with the
exact kinds, ready for `POST /v1/projects/{id}/funnels/query` or to be saved.

Cost is bounded by the input and by a clock: at most `Limits.max_journeys` journeys of at most
`max_steps` steps, at most `max_patterns` frequent patterns per mining run (TooManyPatterns past
it), the suggestions' and the drivers' mining within `max_seconds` together (MiningTimedOut), and
the next-step model on at most NEXT_STEP_JOURNEYS journeys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .drivers import DriverSettings, drivers
from .journeys import Limits
from .markov import fit, top_k_accuracy
from .mining import MiningSettings, Suggestion, suggest
from .source import Journeys, JourneyUnit, step_kind, step_text

DEFAULT_TOP, MAX_TOP = 20, 100
DEFAULT_MIN_SUPPORT = 0.03
DEFAULT_MAX_LENGTH, MAX_LENGTH = 8, 20
DRIVER_MAX_LENGTH = 6
# The next-step model is fitted on the first (pseudo-random: source.py's hash order) journeys only:
# its counts grow with the distinct contexts, and its accuracy settles long before.
NEXT_STEP_JOURNEYS = 20_000
DAY_SECONDS = 86_400
FUNNEL_MAX_WINDOW_SECONDS = 366 * DAY_SECONDS


@dataclass(frozen=True)
class PatternsQuestion:
    unit: JourneyUnit = "sessions"
    goal: str | None = None  # `kind:value`
    top: int = DEFAULT_TOP
    min_support: float = DEFAULT_MIN_SUPPORT
    max_length: int = DEFAULT_MAX_LENGTH
    next_step: bool = True
    range_seconds: int = DAY_SECONDS  # the range asked: a funnel by people spans it
    limits: Limits = field(default_factory=Limits)


def funnel_definition(steps: tuple[str, ...], question: PatternsQuestion) -> dict[str, Any]:
    """The funnel API's definition of a pattern: its steps with their kinds, in order, other steps
    allowed between; by sessions within a day, by people within the range asked (at most the
    funnel's longest window). A page step's value is its cleaned path, which the funnel matches
    against the raw path: a pattern found with cleaning rules may need a `*` in its page steps."""
    seconds = DAY_SECONDS if question.unit == "sessions" else question.range_seconds
    seconds = max(1, min(seconds, FUNNEL_MAX_WINDOW_SECONDS))
    window = {"value": seconds // DAY_SECONDS, "unit": "day"} if seconds % DAY_SECONDS == 0 else None
    return {
        "steps": [{"kind": step_kind(s), "value": step_text(s)} for s in steps],
        "window": window or {"value": seconds, "unit": "second"},
        "order": "ordered",
        "unit": question.unit,
    }


def _number(value: float) -> float | None:
    """JSON has no infinity: None stands for it (a rate divided by a rate of zero)."""
    return value if math.isfinite(value) else None


def pattern_answer(suggestion: Suggestion, question: PatternsQuestion) -> dict[str, Any]:
    return {
        "steps": [step_text(s) for s in suggestion.steps],
        "kinds": [step_kind(s) for s in suggestion.steps],
        "support": suggestion.support,
        "share": suggestion.share,
        "expected_share": suggestion.expected_share,
        "leverage": suggestion.leverage,
        "lift": suggestion.lift,
        "z": suggestion.z,
        "step_counts": list(suggestion.step_counts),
        # Of the journeys with the first step, the share that never reach the last in order.
        "drop_off": 1 - suggestion.support / suggestion.step_counts[0],
        "reason": suggestion.reason,
        "funnel": funnel_definition(suggestion.steps, question),
    }


def analyse(journeys: Journeys, question: PatternsQuestion) -> dict[str, Any]:
    """The answer to `question` over `journeys` (blocking, CPU-bound: run it in a thread)."""
    steps = journeys.journeys
    limits = question.limits
    deadline = limits.deadline()  # one budget for the suggestions and the drivers together
    mining = MiningSettings(
        min_support=question.min_support,
        max_length=question.max_length,
        top=question.top,
        limits=limits,
        deadline=deadline,
    )
    answer: dict[str, Any] = {
        "unit": question.unit,
        "journeys": len(steps),
        "truncated": journeys.truncated,
        "patterns": [pattern_answer(s, question) for s in suggest(steps, mining)],
    }
    if question.goal is not None:
        settings = DriverSettings(
            max_length=min(DRIVER_MAX_LENGTH, question.max_length),
            top=question.top,
            limits=limits,
            deadline=deadline,
        )
        found = drivers(steps, question.goal, settings)
        answer["converters"] = sum(question.goal in journey for journey in steps)
        answer["drivers"] = [
            {
                "steps": [step_text(s) for s in d.steps],
                "kinds": [step_kind(s) for s in d.steps],
                "converters_with": d.converters_with,
                "converters": d.converters,
                "others_with": d.others_with,
                "others": d.others,
                "support_converters": d.converters_with / max(1, d.converters),
                "support_others": d.others_with / max(1, d.others),
                "lift": _number(d.lift),
                "p_value": d.p_value,
                "q_value": d.q_value,
                "direction": "raises" if d.raises else "lowers",
                "reason": d.reason,
            }
            for d in found
        ]
    answer["next_step"] = next_step_summary(steps) if question.next_step else None
    return answer


def next_step_summary(journeys: tuple[tuple[str, ...], ...]) -> dict[str, Any] | None:
    """The next-step model's order and held-out top-3 accuracy beside the most-frequent-steps
    baseline, fitted on 80% of at most NEXT_STEP_JOURNEYS journeys and scored on the rest."""
    sample = journeys[:NEXT_STEP_JOURNEYS]
    cut = int(len(sample) * 0.8)
    held_out = sample[cut:]
    if cut == 0 or not any(len(j) > 1 for j in held_out):
        return None
    fitted = fit(sample[:cut])
    accuracy = top_k_accuracy(fitted.model, held_out, 3)
    return {
        "order": fitted.model.order,
        "top3_accuracy": accuracy.model,
        "baseline_top3_accuracy": accuracy.baseline,
        "predictions": accuracy.predictions,
        "journeys": len(sample),
    }
