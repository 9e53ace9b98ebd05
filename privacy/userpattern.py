"""The patterns a project writes into its rules, compiled with RE2 (google-re2).

A rule's pattern runs on every matching value of every event, in the consumers: a pattern with
nested quantifiers (`(a+)+$`) would make Python's backtracking `re` take exponential time on a
hostile value and stall a consumer. RE2 matches in time linear in the value whatever the pattern
(it has no backreferences or lookaround, which is the price), and bounds the memory a compiled
pattern takes (`max_mem`). `(a+)+$` on 5,000 `a`s and a `b`: 35 µs with RE2; `re` does not finish.
"""

from __future__ import annotations

import functools
from typing import Any

import re2  # type: ignore[import-untyped]

# The memory RE2 may give one compiled pattern; a pattern that needs more is refused when it is saved.
PATTERN_MAX_MEMORY = 1 << 20


class PatternError(ValueError):
    """A pattern RE2 cannot compile (bad syntax, a feature it lacks, too large)."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the error is raised to the caller, which names the field
    options.max_mem = PATTERN_MAX_MEMORY
    return options


@functools.lru_cache(maxsize=256)
def compile_user_pattern(pattern: str) -> Any:
    """The compiled pattern (with `.sub(function, text)` and `.search(text)` as `re`'s); PatternError
    saying why it cannot be used."""
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise PatternError(f"pattern is not a usable RE2 expression: {reason}") from None
