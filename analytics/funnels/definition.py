"""A funnel's definition: its steps, its conversion window and its order mode, validated on
construction (docs/funnels.md, "Definitions"). Shared by the SQL builder and the reference."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .filters import (
    MAX_FUNNEL_FILTERS,
    MAX_STEP_FILTERS,
    Filter,
    FilterError,
    check_filters,
    check_key,
)

MIN_STEPS, MAX_STEPS = 2, 20
MAX_EXCLUSIONS = 5
# A window longer than a year is a mistake more often than a question.
MAX_WINDOW_MS = 366 * 24 * 3600 * 1000
MAX_NAME_LENGTH = 200

Order = Literal["ordered", "strict", "unordered"]
# Whose progress a funnel follows: a person (user id, else anonymous id), or a session of the
# sessions table (docs/funnels.md, "Sessions as the unit").
Unit = Literal["people", "sessions"]
UNITS: tuple[Unit, ...] = ("people", "sessions")
ORDERS: tuple[Order, ...] = ("ordered", "strict", "unordered")
StepKind = Literal["event", "page"]


class FunnelError(ValueError):
    """An invalid funnel: `code` is machine-readable, `field` names what is wrong."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


@dataclass(frozen=True, slots=True)
class Step:
    """An event by its name (`event`: exact), or a page by its path (`page`: `*` matches any run of
    characters, everything else itself); and every one of `filters` (filters.py). An `optional`
    step may be skipped by an attempt (not the first nor the last step); `window_ms`, when set, is
    the most time from the attempt's previous taken step to this one (not on the first step), on
    top of the funnel's window from the first (docs/funnels.md, "Definitions")."""

    kind: StepKind
    value: str
    filters: tuple[Filter, ...] = ()
    optional: bool = False
    window_ms: int | None = None

    def matches(self, event_name: str, event_type: str, page_path: str) -> bool:
        if self.kind == "event":
            return event_name == self.value
        return event_type == "page" and _glob(self.value).fullmatch(page_path) is not None


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


@dataclass(frozen=True, slots=True)
class Exclusion:
    """An event or page (`step`: matched as a step is, filters included) that voids an attempt when
    it comes between the attempt's steps `from_step` and `to_step` (1-based, from_step < to_step);
    or, when the attempt reached from_step but not to_step, after from_step and within the window
    from the attempt's first step (docs/funnels.md, "Definitions")."""

    step: Step
    from_step: int
    to_step: int


MAX_BREAKDOWN_VALUES = 100
Attribution = Literal["first", "last"]


@dataclass(frozen=True, slots=True)
class Breakdown:
    """The people split by the value of `column` (a column of filters.FILTER_COLUMNS, or
    `properties.` and a path: filters.breakdown_value) at the first step of their reported attempt
    (`first`) or at the last step it reached (`last`): the `limit` values with most people at the
    first step, the rest together."""

    column: str
    attribution: Attribution = "first"
    limit: int = 10


@dataclass(frozen=True, slots=True)
class Funnel:
    steps: tuple[Step, ...]
    window_ms: int  # the last step at most this long after the first
    order: Order = "ordered"
    breakdown: Breakdown | None = None
    # Events failing any of these are left out, as those outside the time range are.
    filters: tuple[Filter, ...] = ()
    unit: Unit = "people"
    exclusions: tuple[Exclusion, ...] = ()
    # Bots' events (`is_bot`: docs/privacy.md) are left out unless this says to count them.
    include_bots: bool = False

    def __post_init__(self) -> None:
        if not MIN_STEPS <= len(self.steps) <= MAX_STEPS:
            raise FunnelError("steps_count", "steps", f"a funnel has {MIN_STEPS} to {MAX_STEPS} steps")
        for index, step in enumerate(self.steps):
            _check_step(step, f"steps[{index}]")
            self._check_step_options(index, step)
        self._check_exclusions()
        _check_filters(self.filters, MAX_FUNNEL_FILTERS, "filters")
        if not 0 < self.window_ms <= MAX_WINDOW_MS:
            raise FunnelError("window", "window", "the window is positive and at most 366 days")
        if self.unit not in UNITS:
            raise FunnelError("unit", "unit", f"the unit is one of {', '.join(UNITS)}")
        if self.order not in ORDERS:
            raise FunnelError("order", "order", f"the order is one of {', '.join(ORDERS)}")
        if self.order == "unordered" and self.exclusions:
            # "Between steps k and l" needs the steps in an order (docs/funnels.md, "Definitions").
            raise FunnelError(
                "exclusions_unordered", "exclusions", "exclusions are not defined for an unordered funnel"
            )
        if self.order == "unordered" and self.has_step_options:
            # An optional step and a step's own window both name the step before it.
            index = next(i for i, s in enumerate(self.steps) if s.optional or s.window_ms is not None)
            field = "optional" if self.steps[index].optional else "window"
            raise FunnelError(
                "step_options_unordered",
                f"steps[{index}].{field}",
                "optional steps and step windows are not defined for an unordered funnel",
            )
        if self.breakdown is not None:
            try:
                check_key(self.breakdown.column)
            except FilterError as exc:
                raise FunnelError("breakdown_column", "breakdown.column", str(exc)) from None
            if self.breakdown.attribution not in ("first", "last"):
                raise FunnelError("breakdown_attribution", "breakdown.attribution", "first or last")
            if not 1 <= self.breakdown.limit <= MAX_BREAKDOWN_VALUES:
                raise FunnelError("breakdown_limit", "breakdown.limit", f"1 to {MAX_BREAKDOWN_VALUES} values")

    def _check_step_options(self, index: int, step: Step) -> None:
        last = len(self.steps) - 1
        if step.optional and not 0 < index < last:
            raise FunnelError(
                "optional_step",
                f"steps[{index}].optional",
                "the first step begins an attempt and the last is its conversion: neither is optional",
            )
        if step.window_ms is not None:
            if index == 0:
                raise FunnelError(
                    "step_window", f"steps[{index}].window", "the first step has no step before it"
                )
            if not 0 < step.window_ms <= MAX_WINDOW_MS:
                raise FunnelError(
                    "step_window",
                    f"steps[{index}].window",
                    "a step's window is positive and at most 366 days",
                )

    @property
    def has_step_options(self) -> bool:
        """Whether any step is optional or has a window of its own (the query's per-start form)."""
        return any(step.optional or step.window_ms is not None for step in self.steps)

    def previous_required(self, step: int) -> int:
        """The nearest required step before `step` (1-based; step 1 is always required): the
        "previous" step of the answer's conversion and drop-off."""
        return next(k for k in range(step - 1, 0, -1) if not self.steps[k - 1].optional)

    def _check_exclusions(self) -> None:
        if len(self.exclusions) > MAX_EXCLUSIONS:
            raise FunnelError("exclusions_count", "exclusions", f"at most {MAX_EXCLUSIONS} exclusions")
        steps = len(self.steps)
        for index, exclusion in enumerate(self.exclusions):
            where = f"exclusions[{index}]"
            _check_step(exclusion.step, where)
            if exclusion.step.optional or exclusion.step.window_ms is not None:
                raise FunnelError(
                    "exclusion_step", where, "an exclusion is neither optional nor has a window"
                )
            if not 1 <= exclusion.from_step < steps:
                raise FunnelError(
                    "exclusion_steps", f"{where}.from_step", f"a step from 1 to {steps - 1} (1-based)"
                )
            if not exclusion.from_step < exclusion.to_step <= steps:
                raise FunnelError(
                    "exclusion_steps", f"{where}.to_step", f"a step after from_step, at most {steps}"
                )
            for end in ("from_step", "to_step"):
                if self.steps[getattr(exclusion, end) - 1].optional:
                    raise FunnelError(
                        "exclusion_steps", f"{where}.{end}", "an exclusion lies between two required steps"
                    )


def _check_step(step: Step, where: str) -> None:
    if step.kind not in ("event", "page"):
        raise FunnelError("step_kind", where, "a step is an event or a page")
    if not step.value or len(step.value) > MAX_NAME_LENGTH:
        raise FunnelError("step_value", where, f"a step names 1 to {MAX_NAME_LENGTH} characters")
    _check_filters(step.filters, MAX_STEP_FILTERS, f"{where}.filters")


def _check_filters(filters: tuple[Filter, ...], most: int, where: str) -> None:
    try:
        check_filters(filters, most)
    except FilterError as exc:
        raise FunnelError(exc.code, where, str(exc)) from None


PeopleStatus = Literal["converted", "dropped"]
MAX_PEOPLE_PAGE = 1000


@dataclass(frozen=True, slots=True)
class PeopleList:
    """Whose attempt took step `step` (1-based; `converted`), or took the nearest required step
    before it and not it (`dropped`, from the second step on): a page of at most `limit` people,
    sorted, after `after`."""

    step: int
    status: PeopleStatus
    limit: int = 100
    after: str | None = None

    def check(self, funnel: Funnel) -> None:
        if not 1 <= self.step <= len(funnel.steps):
            raise FunnelError("people_step", "people.step", f"a step from 1 to {len(funnel.steps)}")
        if self.status == "dropped" and self.step == 1:
            raise FunnelError("people_step", "people.step", "nobody drops at the first step: from 2 on")
        if not 1 <= self.limit <= MAX_PEOPLE_PAGE:
            raise FunnelError("people_limit", "people.limit", f"1 to {MAX_PEOPLE_PAGE} people a page")


def parse_step(text: str) -> Step:
    """`event:NAME` or `page:PATH` (the CLI's and the API's short form)."""
    kind, separator, value = text.partition(":")
    if not separator or kind not in ("event", "page"):
        raise FunnelError("step_kind", "steps", f"{text!r}: a step is event:NAME or page:PATH")
    return Step(kind, value)  # type: ignore[arg-type]  # checked above
