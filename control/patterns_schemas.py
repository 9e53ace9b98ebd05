"""The request and answer of `POST /v1/projects/{id}/patterns/query` (docs/patterns.md, "The API"),
as msgspec Structs; the OpenAPI document's schemas are generated from them."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta, Struct, field

from headwater.analytics.funnels.definition import StepKind
from headwater.analytics.patterns.analysis import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_MIN_SUPPORT,
    DEFAULT_TOP,
    MAX_LENGTH,
    MAX_TOP,
)
from headwater.analytics.patterns.source import JourneyUnit

from .schemas import AwareTime, FunnelWindow, IncludeBots, PathsCleaningRule, StepSpec

Share = Annotated[float, Meta(ge=0, le=1)]
Steps = Annotated[
    list[str],
    Meta(description="Each step's text: an event's name, or a page's (cleaned) path; `kinds` tells which."),
]
Kinds = Annotated[list[StepKind], Meta(description="`event` or `page`, one per step.")]


class PatternsRequest(Struct, forbid_unknown_fields=True):
    start_time: AwareTime = field(name="from")
    end_time: AwareTime = field(name="to")
    unit: Annotated[
        JourneyUnit,
        Meta(
            description="`sessions`: each session's steps (the sessions table); `people`: each "
            "person's (the user id, else the anonymous id)."
        ),
    ] = "sessions"
    goal: Annotated[
        StepSpec | None,
        Meta(
            description="With a goal, `drivers`: the patterns before it that raise or lower the chance "
            "of reaching it. An event by its name, or a page by its exact cleaned path (no `*`)."
        ),
    ] = None
    top: Annotated[int, Meta(ge=1, le=MAX_TOP, description="Patterns (and drivers) answered.")] = DEFAULT_TOP
    min_support: Annotated[
        float,
        Meta(gt=0, le=1, description="A suggested pattern occurs in at least this share of the journeys."),
    ] = DEFAULT_MIN_SUPPORT
    max_length: Annotated[
        int, Meta(ge=2, le=MAX_LENGTH, description="Steps per pattern at most (drivers: at most 6).")
    ] = DEFAULT_MAX_LENGTH
    cleaning: Annotated[
        list[PathsCleaningRule], Meta(max_length=20, description="Applied in order to every page path.")
    ] = field(default_factory=list)
    next_step: Annotated[
        bool, Meta(description="Also fit the next-step model and report its held-out accuracy.")
    ] = True
    include_bots: IncludeBots = False

    json_schema_extra: ClassVar[dict[str, Any]] = {
        "examples": [
            {
                "from": "2026-11-01T00:00:00Z",
                "to": "2026-12-01T00:00:00Z",
                "unit": "sessions",
                "goal": {"kind": "event", "value": "Purchased"},
                "top": 20,
            }
        ]
    }


class PatternFunnelStep(Struct, forbid_unknown_fields=True):
    kind: StepKind
    value: str


class PatternFunnel(Struct, forbid_unknown_fields=True):
    """A definition `POST /v1/projects/{id}/funnels/query` takes (with `from` and `to`) and
    `POST /v1/projects/{id}/funnels` saves (with a `name`)."""

    steps: list[PatternFunnelStep]
    window: FunnelWindow
    order: Literal["ordered"]
    unit: JourneyUnit


class Pattern(Struct, forbid_unknown_fields=True):
    steps: Steps
    kinds: Kinds
    support: Annotated[int, Meta(ge=0, description="Journeys holding the steps in this order.")]
    share: Annotated[Share, Meta(description="support / journeys.")]
    expected_share: Annotated[
        Share, Meta(description="The share its two parts predict if independent (the largest cut).")
    ]
    leverage: Annotated[float, Meta(description="share - expected_share: the rank.")]
    lift: Annotated[float, Meta(description="share / expected_share.")]
    z: Annotated[float, Meta(description="leverage in binomial standard errors.")]
    step_counts: Annotated[
        list[int], Meta(description="Journeys holding its first 1, 2, ... steps in order.")
    ]
    drop_off: Annotated[
        Share, Meta(description="Of the journeys with the first step, the share never reaching the last.")
    ]
    reason: str
    funnel: PatternFunnel


class Driver(Struct, forbid_unknown_fields=True):
    steps: Steps
    kinds: Kinds
    converters_with: Annotated[int, Meta(ge=0)]
    converters: Annotated[int, Meta(ge=0, description="Journeys reaching the goal.")]
    others_with: Annotated[int, Meta(ge=0)]
    others: Annotated[int, Meta(ge=0)]
    support_converters: Annotated[Share, Meta(description="converters_with / converters.")]
    support_others: Annotated[Share, Meta(description="others_with / others.")]
    lift: Annotated[
        float | None,
        Meta(description="Conversion rate with the pattern / without it; null: none convert without it."),
    ]
    p_value: Annotated[float, Meta(ge=0, le=1, description="Fisher's exact test, two-sided.")]
    q_value: Annotated[float, Meta(ge=0, le=1, description="Benjamini-Hochberg adjusted.")]
    direction: Literal["raises", "lowers"]
    reason: str


class NextStep(Struct, forbid_unknown_fields=True):
    order: Annotated[int, Meta(ge=0, description="Steps of memory, chosen by held-out likelihood.")]
    top3_accuracy: Annotated[Share, Meta(description="Held-out: the next step among the model's 3.")]
    baseline_top3_accuracy: Annotated[Share, Meta(description="...among the 3 most frequent steps.")]
    predictions: Annotated[int, Meta(ge=0)]
    journeys: Annotated[int, Meta(ge=0, description="Journeys it was fitted (80%) and scored (20%) on.")]


class PatternsAnswer(Struct, forbid_unknown_fields=True, omit_defaults=True):
    unit: JourneyUnit
    journeys: Annotated[int, Meta(ge=0, description="Journeys read (sessions or people).")]
    truncated: Annotated[int, Meta(ge=0, description="Journeys cut to their first `max_steps` steps.")]
    patterns: Annotated[list[Pattern], Meta(description="Suggested funnels, by leverage.")]
    next_step: NextStep | None
    converters: Annotated[int | None, Meta(description="With a goal: journeys reaching it.")] = None
    drivers: Annotated[list[Driver] | None, Meta(description="With a goal: by p-value, then by effect.")] = (
        None
    )
