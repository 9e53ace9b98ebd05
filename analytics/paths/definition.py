"""A paths question: its start or end point, its depth, the events it reads, its path-cleaning rules
and its edge limit, validated on construction (docs/paths.md, "Definitions"). Shared by the SQL
builder and the reference.

Steps (`event:NAME`, `page:GLOB`), `parse_step` and the error type are the funnels' own."""

from __future__ import annotations

import re
from dataclasses import dataclass
from re import _parser as sre_parse  # type: ignore[attr-defined]  # the stdlib's regex parser
from typing import Any, Literal

from headwater.analytics.funnels.definition import MAX_NAME_LENGTH, FunnelError, Step

MIN_STEPS, MAX_STEPS, DEFAULT_STEPS = 2, 10, 4
MAX_EDGES, DEFAULT_EDGES = 500, 50
MAX_RULES = 20
MAX_RULE_LENGTH = 500

Include = Literal["pages", "events", "both"]
INCLUDES: tuple[Include, ...] = ("pages", "events", "both")
# The events' `type` values each `include` reads, and the kind of step each becomes.
INCLUDED_TYPES: dict[str, tuple[str, ...]] = {
    "pages": ("page",),
    "events": ("track",),
    "both": ("page", "track"),
}
KIND_OF_TYPE = {"page": "page", "track": "event"}


class PathsError(FunnelError):
    """An invalid paths question: `code` is machine-readable, `field` names what is wrong."""


@dataclass(frozen=True, slots=True)
class CleaningRule:
    """Every match of `regex` (re2 syntax, as ClickHouse's replaceRegexpAll) in a page path is
    replaced by `replacement`, where `\\0`..`\\9` are the match and its groups and `\\x` any other
    character x itself."""

    regex: str
    replacement: str


# Parts of Python's regex syntax that re2 lacks (lookarounds, back-references, atomic groups,
# possessive repeats, conditionals): refused, so a regex means the same in both.
_NOT_RE2 = {
    "ASSERT", "ASSERT_NOT", "GROUPREF", "GROUPREF_EXISTS", "GROUPREF_IGNORE",
    "ATOMIC_GROUP", "POSSESSIVE_REPEAT",
}  # fmt: skip


def _opcodes(parsed: Any) -> set[str]:
    """Every opcode's name in a parsed pattern, nested ones included."""
    found: set[str] = set()
    for opcode, argument in parsed:
        found.add(str(opcode))
        for part in argument if isinstance(argument, list | tuple) else ():
            if isinstance(part, sre_parse.SubPattern):
                found |= _opcodes(part)
            elif isinstance(part, list | tuple):
                for inner in part:
                    if isinstance(inner, sre_parse.SubPattern):
                        found |= _opcodes(inner)
    return found


def replacement_groups(replacement: str) -> list[int]:
    """The group numbers a replacement refers to (`\\0`..`\\9`), in order."""
    groups, index = [], 0
    while index < len(replacement):
        if replacement[index] == "\\" and index + 1 < len(replacement):
            if replacement[index + 1].isdigit() and replacement[index + 1].isascii():
                groups.append(int(replacement[index + 1]))
            index += 2
        else:
            index += 1
    return groups


def check_rule(rule: CleaningRule, index: int) -> re.Pattern[str]:
    """The rule's regex compiled (by Python's re: the reference's), or a PathsError naming it."""
    where = f"cleaning[{index}]"
    if not rule.regex or len(rule.regex) > MAX_RULE_LENGTH:
        raise PathsError("cleaning_regex", f"{where}.regex", f"a regex of 1 to {MAX_RULE_LENGTH} characters")
    if len(rule.replacement) > MAX_RULE_LENGTH:
        raise PathsError(
            "cleaning_replacement", f"{where}.replacement", f"at most {MAX_RULE_LENGTH} characters"
        )
    try:
        compiled = re.compile(rule.regex)
        unsupported = _opcodes(sre_parse.parse(rule.regex)) & _NOT_RE2
    except (re.error, RecursionError, OverflowError) as exc:
        raise PathsError("cleaning_regex", f"{where}.regex", f"the regex does not compile: {exc}") from None
    if unsupported or "\x00" in rule.regex:
        raise PathsError(
            "cleaning_regex",
            f"{where}.regex",
            "lookarounds, back-references, atomic groups, possessive repeats and NUL are not re2 syntax",
        )
    for group in replacement_groups(rule.replacement):
        if group > compiled.groups:
            raise PathsError(
                "cleaning_replacement",
                f"{where}.replacement",
                f"\\{group} refers to a group the regex does not have ({compiled.groups} groups)",
            )
    return compiled


@dataclass(frozen=True, slots=True)
class Paths:
    """From each person's first step matching `start` (or to their last matching `end`; with
    neither, from their first step) the `steps` steps of their journey, of the kinds `include`
    reads, page paths cleaned by `cleaning` in order; answered as the `edge_limit` heaviest edges."""

    start: Step | None = None
    end: Step | None = None
    steps: int = DEFAULT_STEPS
    include: Include = "both"
    cleaning: tuple[CleaningRule, ...] = ()
    edge_limit: int = DEFAULT_EDGES
    include_bots: bool = False  # bots' events (docs/privacy.md) are left out unless this is set

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None:
            raise PathsError("start_and_end", "end", "a path has a start point or an end point, not both")
        if self.include not in INCLUDES:
            raise PathsError("include", "include", f"one of {', '.join(INCLUDES)}")
        for name, point in (("start", self.start), ("end", self.end)):
            if point is None:
                continue
            if point.kind not in ("event", "page"):
                raise PathsError("step_kind", f"{name}.kind", "a step is an event or a page")
            if not point.value or len(point.value) > MAX_NAME_LENGTH:
                raise PathsError("step_value", f"{name}.value", f"1 to {MAX_NAME_LENGTH} characters")
            included = {KIND_OF_TYPE[kind] for kind in INCLUDED_TYPES[self.include]}
            if point.kind not in included:
                raise PathsError(
                    "step_not_included", name, f"a {point.kind} step, but `include` is {self.include}"
                )
        if not MIN_STEPS <= self.steps <= MAX_STEPS:
            raise PathsError("steps", "steps", f"a path has {MIN_STEPS} to {MAX_STEPS} steps")
        if not 1 <= self.edge_limit <= MAX_EDGES:
            raise PathsError("edge_limit", "edge_limit", f"1 to {MAX_EDGES} edges")
        if len(self.cleaning) > MAX_RULES:
            raise PathsError("cleaning", "cleaning", f"at most {MAX_RULES} cleaning rules")
        for index, rule in enumerate(self.cleaning):
            check_rule(rule, index)

    @property
    def anchor(self) -> Step | None:
        return self.start if self.start is not None else self.end


def parse_rule(text: str) -> CleaningRule:
    """`REGEX=>REPLACEMENT` (the CLI's form)."""
    regex, separator, replacement = text.partition("=>")
    if not separator:
        raise PathsError("cleaning", "cleaning", f"{text!r}: a rule is REGEX=>REPLACEMENT")
    return CleaningRule(regex, replacement)
