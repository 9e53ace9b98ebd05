"""ClickHouse's error code of a failed query, whichever driver raised it.

clickhouse-connect raises `DatabaseError` for every error answer of a server, and chdb raises its
own `ChdbError` (or clickhouse-connect wraps it): the kind of failure is only in ClickHouse's error
code — the `code` attribute, the `X-ClickHouse-Exception-Code` header clickhouse-connect read, or
the `Code: 243.` the message starts with.
"""

from __future__ import annotations

import re

_CODE = re.compile(r"\bCode:\s*(\d+)")


def error_code(error: BaseException) -> int | None:
    """ClickHouse's error code of `error`, from clickhouse-connect's attribute or the message."""
    code = getattr(error, "code", None)
    if isinstance(code, int):
        return code
    match = _CODE.search(str(error))
    return int(match.group(1)) if match else None
