"""The ingest steps that do not depend on the web framework: key, origin, validation, envelope.

Kept free of Quart so the hot path can later be served by a bare ASGI route with the same logic.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from headwater.control.project import Project, utc_now_iso
from headwater.control.registry import KeyMatch

from .envelope import Envelope
from .errors import IngestError

MAX_MESSAGE_ID_LENGTH = 100


class KeyResolver(Protocol):
    def resolve_key(self, key: str, now: datetime | None = None) -> KeyMatch | None: ...


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the edge uses of an HTTP request, whatever served it."""

    body: bytes
    authorization: str | None
    write_key_header: str | None
    origin: str | None
    user_agent: str | None
    client_ip: str | None


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise IngestError(400, "invalid_json", "the body must be a JSON object")
    return parsed


def extract_write_key(facts: RequestFacts, body: dict[str, Any]) -> str:
    """The write key from HTTP Basic (username, Segment style), `X-Write-Key`, or `writeKey`."""
    if facts.authorization:
        scheme, _, encoded = facts.authorization.partition(" ")
        if scheme.lower() == "basic" and encoded:
            try:
                username = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").split(":", 1)[0]
            except (binascii.Error, UnicodeDecodeError):
                raise IngestError(
                    401, "invalid_authorization", "the Basic credentials are not valid base64"
                ) from None
            if username:
                return username
    if facts.write_key_header:
        return facts.write_key_header.strip()
    body_key = body.get("writeKey")
    if isinstance(body_key, str) and body_key:
        return body_key
    raise IngestError(
        401,
        "missing_key",
        "send the project's write key as the HTTP Basic username, in X-Write-Key, or as writeKey",
    )


def authorize(resolver: KeyResolver, key: str, origin: str | None) -> tuple[Project, KeyMatch]:
    match = resolver.resolve_key(key)
    if match is None:
        raise IngestError(401, "unknown_key", "the write key is not known (or has expired)")
    project = match.project
    if not project.enabled:
        raise IngestError(403, "project_disabled", f"project {project.id!r} is disabled")
    if match.key.kind == "secret":
        if origin:
            raise IngestError(
                403,
                "secret_key_from_browser",
                "secret keys must never be used from a browser; use the project's public key",
            )
    elif not project.origin_policy.allows(origin):
        raise IngestError(
            403,
            "origin_not_allowed",
            f"origin {origin!r} is not among the allowed origins of project {project.id!r}"
            if origin
            else "public keys are accepted only from the project's allowed origins (no Origin header)",
        )
    return project, match


def _check_timestamp(event: dict[str, Any], field: str) -> None:
    value = event.get(field)
    if value is None:
        return
    if not isinstance(value, str):
        raise IngestError(400, "invalid_timestamp", f"{field} must be an ISO-8601 string", field)
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise IngestError(400, "invalid_timestamp", f"{field} {value!r} is not ISO-8601", field) from None


def _optional_id(event: dict[str, Any], field: str) -> str | None:
    value = event.get(field)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise IngestError(400, "invalid_field", f"{field} must be a string", field)
    return str(value)


def validate_track(event: dict[str, Any], max_event_bytes: int, size: int) -> dict[str, Any]:
    """A valid Segment `track` event, normalised (ids as strings, `type`, a `messageId`)."""
    if size > max_event_bytes:
        raise IngestError(413, "event_too_large", f"an event may be at most {max_event_bytes} bytes")
    name = event.get("event")
    if not isinstance(name, str) or not name.strip():
        raise IngestError(400, "missing_field", "track needs an event name", "event")
    user_id = _optional_id(event, "userId")
    anonymous_id = _optional_id(event, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise IngestError(400, "missing_field", "every event needs userId or anonymousId", "userId")
    for field in ("properties", "context", "integrations"):
        if field in event and not isinstance(event[field], dict):
            raise IngestError(400, "invalid_field", f"{field} must be an object", field)
    for field in ("timestamp", "sentAt"):
        _check_timestamp(event, field)
    message_id = event.get("messageId")
    if message_id is None:
        message_id = str(uuid.uuid4())
    elif not isinstance(message_id, str) or not message_id or len(message_id) > MAX_MESSAGE_ID_LENGTH:
        raise IngestError(
            400,
            "invalid_field",
            f"messageId must be a string of 1 to {MAX_MESSAGE_ID_LENGTH} characters",
            "messageId",
        )
    normalised = {k: v for k, v in event.items() if k != "writeKey"}
    normalised.update(type="track", messageId=message_id)
    if user_id is not None:
        normalised["userId"] = user_id
    if anonymous_id is not None:
        normalised["anonymousId"] = anonymous_id
    return normalised


def build_envelope(
    project: Project, match: KeyMatch, facts: RequestFacts, events: list[dict[str, Any]]
) -> Envelope:
    return Envelope(
        project=project.id,
        request_id=uuid.uuid4().hex,
        received_at=utc_now_iso(),
        events=events,
        key_kind=match.key.kind,
        ip=facts.client_ip,
        user_agent=facts.user_agent,
        origin=facts.origin,
    )
