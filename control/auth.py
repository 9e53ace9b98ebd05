"""Admin bearer-token authentication, compared in constant time against every configured token."""

from __future__ import annotations

import hmac

from headwater.core.service.errors import APIError

from .settings import AdminToken


def authenticate_admin(authorization: str | None, tokens: tuple[AdminToken, ...]) -> AdminToken:
    """The token named by an `Authorization: Bearer …` header; 401 without one, 403 if it is wrong."""
    if not authorization:
        raise APIError(401, "missing_admin_token", "send the admin token as 'Authorization: Bearer <token>'")
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise APIError(401, "missing_admin_token", "send the admin token as 'Authorization: Bearer <token>'")
    presented_bytes = presented.strip().encode()
    matched: AdminToken | None = None
    # Compare against every token, without stopping early, so timing reveals neither which nor
    # how many tokens exist.
    for candidate in tokens:
        if hmac.compare_digest(presented_bytes, candidate.token.encode()):
            matched = candidate
    if matched is None:
        raise APIError(403, "invalid_admin_token", "the admin token is not valid")
    return matched
