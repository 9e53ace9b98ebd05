"""Long lists (the thousands of identities and times of a sessionizer cycle) as query parameters.

clickhouse-connect formats an `Array(String)` parameter in Python, escaping every character of
every element: 0.06 s for the ~10k identities of a cycle (binding an Int64 array of their times
as much again), paid by every statement that names them. A list is bound here instead as one
binary parameter `$name$`, which the driver splices into the query unescaped as a heredoc literal
(`$name$…$name$`): its JSON text, made by `json.dumps`, which ClickHouse reads back with
`JSONExtract`. The text holds no `$` (each is written as the JSON escape `\\u0024`), so nothing in
it can close the heredoc: it stays one string literal whatever the values, as a bound parameter does.

The query text then carries the list, so a statement naming one runs with LONG_LIST_SETTINGS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

# The query text may hold the lists (ClickHouse's default limit is 256 KiB).
LONG_LIST_SETTINGS: dict[str, Any] = {"max_query_size": 1 << 28}

ElementType = Literal["String", "Int64"]
_NAME = re.compile(r"[A-Za-z0-9_]+")


def long_list(name: str, element_type: ElementType) -> str:
    """SQL for the list bound as `long_list_parameter(name, …)`: a constant Array(element_type)."""
    return f"JSONExtract({_tag(name)}, 'Array({element_type})')"


def long_list_parameter(name: str, values: Sequence[str] | Sequence[int]) -> dict[str, bytes]:
    """The parameter binding `values` for `long_list(name, …)`."""
    text = json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))
    return {_tag(name): text.replace("$", "\\u0024").encode()}


def _tag(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"a long list's name is letters, digits and _: {name!r}")
    return f"${name}$"
