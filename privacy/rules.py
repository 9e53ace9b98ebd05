"""Anonymisation rules as a project declares them: an ordered list, each a field path and an action
(docs/privacy.md, "Anonymisation rules").

Declared as msgspec Structs, so the project's settings validate them and the OpenAPI document shows
them (core/projects/settings.py); what one Struct cannot say on its own (an action's required
options, a path's shape, a pattern that must compile) is checked by `rule_problem`, which names the
field at fault.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from .userpattern import PatternError, compile_user_pattern

RuleAction = Literal["drop", "mask", "truncate", "hash", "redact"]
Detector = Literal["email", "phone", "card", "iban", "ip", "url_secrets"]
DETECTORS: tuple[Detector, ...] = ("email", "phone", "card", "iban", "ip", "url_secrets")

MAX_RULES = 50
MAX_PATH_LENGTH = 200
MAX_PATH_SEGMENTS = 10
MAX_PATTERN_LENGTH = 200
MAX_PLACEHOLDER_LENGTH = 50
MAX_QUERY_NAMES = 50
MAX_TRUNCATE_LENGTH = 10_000
MAX_MASK_KEEP = 8

# The fields a rule may name: the three JSON objects of an event, and its ids (so a user id can be
# hashed and still join). A path is one of the ids, or an object followed by dot-separated keys,
# where `*` stands for every key (or array element) of one level.
ID_FIELDS: tuple[str, ...] = ("userId", "anonymousId", "previousId", "groupId")
OBJECT_FIELDS: tuple[str, ...] = ("properties", "traits", "context")
# At most MAX_PATH_SEGMENTS levels: the root and nine keys.
PATH_PATTERN = (
    r"^(?:userId|anonymousId|previousId|groupId|(?:properties|traits|context)(?:\.(?:\*|[^.*]+)){0,9})$"
)

RulePath = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_PATH_LENGTH,
        pattern=PATH_PATTERN,
        description=(
            "The field: userId, anonymousId, previousId, groupId, or properties/traits/context "
            "followed by dot-separated keys (`properties.user.email`); `*` is every key of one "
            "level (`traits.*`). A rule on an object applies to every value inside it."
        ),
        examples=["properties.email", "traits.*", "context.page.url", "userId"],
    ),
]
QueryName = Annotated[str, Meta(min_length=1, max_length=100)]
QueryNames = Annotated[tuple[QueryName, ...], Meta(max_length=MAX_QUERY_NAMES)]


class Rule(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One anonymisation rule. With `detectors` or `pattern`, the action applies to each match
    inside a text value (`drop`: the field goes when anything matches); without, to the value."""

    path: RulePath
    action: Annotated[
        RuleAction,
        Meta(
            description=(
                "drop: remove the field; mask: every character becomes `*` (length kept, the last "
                "`keep_last` kept); truncate: the first `length` characters, an IP address its "
                "network; hash: HMAC-SHA256 under the project's secret key (32 hex digits); "
                "redact: replace matches of `detectors`/`pattern` by a placeholder and remove "
                "query parameters (`url_secrets`, `drop_query`, `keep_query`)."
            )
        ),
    ]
    detectors: Annotated[
        tuple[Detector, ...],
        Meta(
            max_length=len(DETECTORS), description="Built-in detectors whose matches the action applies to."
        ),
    ] = ()
    pattern: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=MAX_PATTERN_LENGTH,
                description=(
                    "A regular expression (RE2 syntax: linear time, no backreferences or lookaround) "
                    "whose matches the action applies to."
                ),
            ),
        ]
        | None
    ) = None
    placeholder: (
        Annotated[
            str,
            Meta(
                max_length=MAX_PLACEHOLDER_LENGTH,
                description=(
                    "What `redact` puts in place of a match; by default `[email]`, `[phone]`, "
                    "`[card]`, `[iban]`, `[ip]`, and `[redacted]` for the pattern's."
                ),
            ),
        ]
        | None
    ) = None
    length: (
        Annotated[
            int,
            Meta(
                ge=0,
                le=MAX_TRUNCATE_LENGTH,
                description="truncate: characters kept (IP addresses keep their network).",
            ),
        ]
        | None
    ) = None
    keep_last: Annotated[
        int, Meta(ge=0, le=MAX_MASK_KEEP, description="mask: trailing characters left readable.")
    ] = 0
    drop_query: Annotated[
        QueryNames,
        Meta(
            description="redact: query parameters removed from URLs in the value (names, case-insensitive)."
        ),
    ] = ()
    keep_query: Annotated[
        QueryNames,
        Meta(
            description="redact: the only query parameters URLs in the value keep (names, case-insensitive)."
        ),
    ] = ()

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("."))


class RuleProblem(ValueError):
    """A rule that cannot be applied: `field` is the rule's field at fault (`path`, `pattern`, …)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def rule_problem(rule: Rule) -> RuleProblem | None:
    """What is wrong with `rule` beyond its types and ranges; None when it can be applied."""
    queries = rule.drop_query or rule.keep_query
    if queries and rule.action != "redact":
        return RuleProblem(
            "drop_query" if rule.drop_query else "keep_query", "only a redact rule filters query parameters"
        )
    if "url_secrets" in rule.detectors and rule.action != "redact":
        return RuleProblem("detectors", "url_secrets removes query parameters: only with action redact")
    if rule.action == "redact" and not (rule.detectors or rule.pattern or queries):
        return RuleProblem("detectors", "a redact rule needs detectors, a pattern, drop_query or keep_query")
    if len(set(rule.detectors)) != len(rule.detectors):
        return RuleProblem("detectors", "a detector is named twice")
    if rule.pattern is not None:
        try:
            compile_user_pattern(rule.pattern)
        except PatternError as exc:
            return RuleProblem("pattern", str(exc))
    return None
