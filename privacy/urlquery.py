"""Query parameters of the URLs inside a text value: removed by name (`drop_query`, and the built-in
secret-looking names of the `url_secrets` detector) or all but the named ones (`keep_query`).

A value may be a whole URL (`https://shop.example/cart?token=…`), a path with its query
(`/reset?code=…`), a query alone (`?sig=…`, what `context.page.search` holds) or text with URLs in
it. Every `?…` section is filtered, and so is a fragment written like a query (`#access_token=…`,
where OAuth's implicit flow puts its tokens). Names compare case-insensitively, after
percent-decoding; what is kept is kept byte for byte, in its order.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

# Parameter names that carry credentials or one-time secrets in the wild (OAuth, signed URLs,
# password resets, session ids in URLs, API keys).
SECRET_QUERY_NAMES: frozenset[str] = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth_token",
        "api_key",
        "apikey",
        "api-key",
        "key",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "pwd",
        "auth",
        "authorization",
        "session",
        "session_id",
        "sessionid",
        "sid",
        "sig",
        "signature",
        "code",
        "otp",
        "jwt",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
    }
)

# A query or fragment: `?` or `#` and what follows up to whitespace, a quote or the next `#`.
_SECTION = re.compile(r"([?#])([^\s\"'<>#]*)")


class QueryFilter:
    """Which parameters to remove: those named in `drop`, or all but those named in `keep` (when
    `keep` is given), compared case-insensitively."""

    __slots__ = ("_drop", "_keep")

    def __init__(self, drop: frozenset[str], keep: frozenset[str] | None) -> None:
        self._drop = frozenset(name.lower() for name in drop)
        self._keep = None if keep is None else frozenset(name.lower() for name in keep)

    def removes(self, name: str) -> bool:
        lowered = (unquote_plus(name) if "%" in name or "+" in name else name).lower()
        if self._keep is not None and lowered not in self._keep:
            return True
        return lowered in self._drop

    def apply(self, text: str) -> str:
        """`text` with the removed parameters taken out of every query (and query-like fragment)."""
        if "?" not in text and "#" not in text:
            return text
        return _SECTION.sub(self._section, text)

    def _section(self, match: re.Match[str]) -> str:
        mark, body = match.group(1), match.group(2)
        if "=" not in body:
            return match.group(0)  # an ordinary fragment (`#pricing`), a question mark in text
        kept = [pair for pair in body.split("&") if pair and not self.removes(pair.partition("=")[0])]
        if not kept:
            return ""
        return mark + "&".join(kept)
