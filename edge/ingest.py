"""Ingest without a web framework: write key, project and origin, validation, clock-skew
correction, rate limits, the envelope, and the durable publish. The ASGI layer (asgi.py) only
turns HTTP into an IngestRequest and an IngestResult or IngestError back into HTTP."""

from __future__ import annotations

import base64
import binascii
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from headwater.control.project import Project, iso
from headwater.control.registry import KeyMatch

from .envelope import Envelope
from .errors import IngestError, SinkUnavailable
from .metrics import EdgeMetrics
from .ratelimit import RateLimiter
from .settings import EdgeSettings
from .sink import Sink
from .subjects import events_subject
from .validation import parse_timestamp, validate_event

log = logging.getLogger(__name__)
BATCH = "batch"


class KeyResolver(Protocol):
    def resolve_key(self, key: str, now: datetime | None = None) -> KeyMatch | None: ...


@dataclass(frozen=True, slots=True)
class IngestRequest:
    """What the edge uses of an HTTP request, whatever served it."""

    kind: str  # an event type, or "batch"
    body: bytes  # already decompressed
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    authorization: str | None = None
    write_key_header: str | None = None
    origin: str | None = None
    user_agent: str | None = None
    client_ip: str | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise IngestError(400, "invalid_json", "the body must be a JSON object")
    return parsed


def extract_write_key(request: IngestRequest, body: dict[str, Any]) -> str:
    """The write key from HTTP Basic (username, Segment style), `X-Write-Key`, or `writeKey`."""
    if request.authorization:
        scheme, _, encoded = request.authorization.partition(" ")
        if scheme.lower() == "basic" and encoded:
            try:
                username = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").split(":", 1)[0]
            except (binascii.Error, UnicodeDecodeError):
                raise IngestError(
                    401, "invalid_authorization", "the Basic credentials are not valid base64"
                ) from None
            if username:
                return username
    if request.write_key_header:
        return request.write_key_header.strip()
    body_key = body.get("writeKey")
    if isinstance(body_key, str) and body_key:
        return body_key
    raise IngestError(
        401,
        "missing_key",
        "send the project's write key as the HTTP Basic username, in X-Write-Key, or as writeKey",
    )


def authorize(resolver: KeyResolver, key: str, origin: str | None) -> KeyMatch:
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
    return match


def cors_headers(origin: str) -> dict[str, str]:
    """For an origin the project allows: echoed back, never a blanket `*`."""
    # Exposed so that a browser SDK can honour Retry-After (429/503) and report the request id.
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": "Retry-After, X-Request-Id",
        "Vary": "Origin",
    }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class TimeCorrection:
    """Segment's clock-skew correction for one request: timestamp = receivedAt - (sentAt -
    timestamp), so a device whose clock is wrong by an hour still records the right time; the
    client's own value is kept as `originalTimestamp`. Without a timestamp, the event happened
    when it arrived. A batch's `sentAt` (what Segment libraries send) is parsed once and stored on
    each of its events that has none."""

    def __init__(self, received_at: datetime, batch_sent_at: object) -> None:
        self._received_at = received_at
        self._received_iso = iso(received_at)
        self._batch_sent_at = batch_sent_at if isinstance(batch_sent_at, str) else None
        parsed = parse_timestamp(batch_sent_at, "sentAt")
        self._batch_sent = _aware(parsed) if parsed is not None else None

    def apply(self, event: dict[str, Any]) -> None:
        if self._batch_sent_at is not None and event.get("sentAt") is None:
            event["sentAt"] = self._batch_sent_at
        stamp = parse_timestamp(event.get("timestamp"), "timestamp")
        if stamp is None:
            event["timestamp"] = self._received_iso
            return
        event["originalTimestamp"] = event["timestamp"]
        sent_raw = event.get("sentAt")
        if sent_raw is self._batch_sent_at:
            sent_at = self._batch_sent
        else:
            parsed = parse_timestamp(sent_raw, "sentAt")
            sent_at = _aware(parsed) if parsed is not None else None
        if sent_at is not None:
            event["timestamp"] = iso(self._received_at - (sent_at - _aware(stamp)))
        else:
            event["timestamp"] = iso(_aware(stamp))


class IngestService:
    def __init__(
        self,
        settings: EdgeSettings,
        sink: Sink,
        keys: KeyResolver,
        limiter: RateLimiter,
        metrics: EdgeMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._sink = sink
        self._keys = keys
        self._limiter = limiter
        self._metrics = metrics
        self._clock = clock

    async def ingest(self, request: IngestRequest) -> IngestResult:
        body = parse_body(request.body)
        match = authorize(self._keys, extract_write_key(request, body), request.origin)
        project = match.project
        cors = cors_headers(request.origin) if match.key.kind == "public" and request.origin else {}
        try:
            return await self._accept(request, body, project, match, cors)
        except IngestError as error:
            error.headers.update(cors)
            if error.errors is None:
                self._metrics.rejected(project.id, error.code)
            raise

    async def _accept(
        self,
        request: IngestRequest,
        body: dict[str, Any],
        project: Project,
        match: KeyMatch,
        cors: dict[str, str],
    ) -> IngestResult:
        received_at = self._clock()
        accepted, rejected = self._validate(request, body)
        secret = match.key.kind == "secret"
        times = TimeCorrection(received_at, body.get("sentAt"))
        for event in accepted:
            times.apply(event)
            if not secret:
                _drop_context_ip(event)  # only server-side senders may say where an event came from
        if not accepted:
            if request.kind != BATCH:
                raise rejected[0][1]
            self._metrics.rejected(project.id, "invalid_event", len(rejected))
            raise IngestError(
                400,
                "no_valid_events",
                "no event of the batch is valid",
                "batch",
                errors=[error.rejection(index) for index, error in rejected],
            )
        wait = self._limiter.check(project, request.client_ip, len(accepted))
        if wait > 0:
            raise IngestError(
                429,
                "rate_limited",
                f"project {project.id!r} is over its rate limit; retry later",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        envelope = Envelope(
            project=project.id,
            request_id=request.request_id,
            received_at=iso(received_at),
            events=accepted,
            key_kind=match.key.kind,
            ip=request.client_ip,
            user_agent=request.user_agent,
            origin=request.origin,
        )
        started = time.perf_counter()
        try:
            await self._sink.publish(events_subject(project.id), envelope.request_id, envelope.encode())
        except SinkUnavailable:
            log.warning("publish failed; answering 503", exc_info=True)
            raise IngestError(
                503,
                "unavailable",
                "events cannot be stored right now; retry later",
                headers={"Retry-After": str(self._settings.retry_after_seconds)},
            ) from None
        self._metrics.publish_seconds.observe(time.perf_counter() - started)
        self._metrics.accepted(project.id, len(accepted))
        for _, error in rejected:
            self._metrics.rejected(project.id, error.code)
        answer: dict[str, Any] = {
            "success": True,
            "request_id": envelope.request_id,
            "accepted": len(accepted),
        }
        if rejected:
            answer["rejected"] = [error.rejection(index) for index, error in rejected]
        return IngestResult(200, answer, cors)

    def _validate(
        self, request: IngestRequest, body: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], list[tuple[int, IngestError]]]:
        settings = self._settings
        if request.kind != BATCH:
            event = validate_event(
                body, request.kind, settings.max_event_bytes, len(request.body), settings.max_nesting_depth
            )
            return [event], []
        batch = body.get("batch")
        if not isinstance(batch, list) or not batch:
            raise IngestError(400, "invalid_batch", "batch must be a non-empty list of events", "batch")
        if len(batch) > settings.max_batch_events:
            raise IngestError(
                413,
                "too_many_events",
                f"a batch may hold at most {settings.max_batch_events} events",
                "batch",
            )
        defaults = {k: body[k] for k in ("context", "integrations") if isinstance(body.get(k), dict)}
        accepted: list[dict[str, Any]] = []
        rejected: list[tuple[int, IngestError]] = []
        # Each event's size matters only when the whole body could hold one over the limit.
        whole_body_fits = len(request.body) <= settings.max_event_bytes
        for index, raw in enumerate(batch):
            try:
                size = 0 if whole_body_fits else len(orjson.dumps(raw))
                event = validate_event(raw, None, settings.max_event_bytes, size, settings.max_nesting_depth)
            except IngestError as error:
                rejected.append((index, error))
                continue
            for key, value in defaults.items():
                event.setdefault(key, value)
            accepted.append(event)
        return accepted, rejected


def _drop_context_ip(event: dict[str, Any]) -> None:
    context = event.get("context")
    if isinstance(context, dict) and "ip" in context:
        event["context"] = {k: v for k, v in context.items() if k != "ip"}
