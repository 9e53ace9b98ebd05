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
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import orjson
from msgspec import UNSET, Raw

from headwater.core.projects.project import Project, iso
from headwater.core.projects.registry import KeyMatch, StaleConfig
from headwater.core.service.authfailures import AuthFailures
from headwater.core.wire.envelope import Envelope
from headwater.core.wire.subjects import events_subject
from headwater.privacy.cookieless import network_of

from .cookieless import CookielessIds, CookielessUnavailable
from .cookieless_events import address_reduced, assign_visitor_ids, reduce_addresses
from .errors import IngestError, MessageTooLarge, SinkUnavailable
from .metrics import EdgeMetrics
from .ratelimit import RateLimiter
from .refusals import RefusalLog
from .settings import EdgeSettings
from .sink import Sink
from .split import Part, split
from .validation import OWN_TYPE, check_timestamp, validate_event, value_nests_deeper
from .wire import BATCH, Limits, RequestBody, SegmentEvent, read_body, without_context_ip

log = logging.getLogger(__name__)
# An accepted event: typed by the fast path, or parsed JSON the precise path validated.
Event = SegmentEvent | dict[str, Any]


# Finds the project a credential (a write key, a Snowplow app id) names, checking the request's Origin.
Authorizer = Callable[[str, str | None], KeyMatch]


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


def extract_write_key(request: IngestRequest, body_key: object) -> str:
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
    # In the other two, the part before a `:` too: `@jitsu/js` refuses a key that is not in Jitsu's
    # `id:secret` form, so its users write `<headwater key>:<anything>` (docs/ingest-api.md#jitsu).
    if request.write_key_header:
        return request.write_key_header.partition(":")[0].strip()
    if isinstance(body_key, str) and body_key:
        return body_key.partition(":")[0]
    raise IngestError(
        401,
        "missing_key",
        "send the project's write key as the HTTP Basic username, in X-Write-Key, or as writeKey",
    )


def slow_down_guessers(auth_failures: AuthFailures, client_ip: str | None) -> None:
    """429 for a client that keeps sending wrong keys, before its body is even read."""
    wait = auth_failures.retry_after(client_ip)
    if wait > 0:
        seconds = max(math.ceil(wait), 1)
        raise IngestError(
            429,
            "too_many_auth_failures",
            f"too many unknown write keys from this address; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


def authorize(resolver: KeyResolver, key: str, origin: str | None) -> KeyMatch:
    match = resolver.resolve_key(key)
    if match is None:
        raise IngestError(401, "unknown_key", "the write key is not known (or has expired)")
    try:
        return _allowed(match, origin)
    except IngestError as error:
        error.project = match.project.id  # the key named it: its refusal log says why
        raise


def _allowed(match: KeyMatch, origin: str | None) -> KeyMatch:
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


# Authentication failures that may be someone guessing keys (a missing key, or a valid key from the
# wrong origin, is a misconfiguration: not counted).
_GUESSES = frozenset({"unknown_key", "invalid_authorization"})


class IngestService:
    def __init__(
        self,
        settings: EdgeSettings,
        sink: Sink,
        keys: KeyResolver,
        limiter: RateLimiter,
        metrics: EdgeMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        auth_failures: AuthFailures | None = None,
        cookieless: CookielessIds | None = None,
        refusals: RefusalLog | None = None,
    ) -> None:
        self._settings = settings
        self._refusals = refusals or RefusalLog()
        self._sink = sink
        self._keys = keys
        self._limiter = limiter
        self._metrics = metrics
        self._clock = clock
        self._limits = Limits(settings.max_event_bytes, settings.max_nesting_depth)
        self._auth_failures = auth_failures or AuthFailures("write key")
        self._authorize_key: Authorizer = partial(authorize, keys)
        self._cookieless = cookieless

    @property
    def refusals(self) -> RefusalLog:
        """Where the HTTP layer records each refused request (the answers are written there)."""
        return self._refusals

    async def ingest(self, request: IngestRequest) -> IngestResult:
        slow_down_guessers(self._auth_failures, request.client_ip)
        body = read_body(request.kind, request.body, self._limits)
        key = extract_write_key(request, body.write_key)
        match = self._authorized(request.client_ip, self._authorize_key, key, request.origin)
        return await self._accept_authorized(request, body, match)

    async def ingest_events(
        self,
        request: IngestRequest,
        events: Sequence[Event | IngestError],
        credential: str,
        rule: Authorizer,
    ) -> IngestResult:
        """Events translated from another protocol (edge/snowplow.py), taken as a batch is (a
        request of kind "batch"): each event validated, an IngestError in an event's place refused
        alone, the others published in one envelope. `rule` finds the project `credential` names
        (as `authorize` does)."""
        if request.kind != BATCH:
            raise ValueError(f"translated events come as a batch, not as {request.kind!r}")
        slow_down_guessers(self._auth_failures, request.client_ip)
        match = self._authorized(request.client_ip, rule, credential, request.origin)
        all_typed = all(type(event) is SegmentEvent for event in events)  # no check per event then
        body = RequestBody(events=events, all_typed=all_typed)
        return await self._accept_authorized(request, body, match)

    def _authorized(
        self, client_ip: str | None, rule: Authorizer, credential: str, origin: str | None
    ) -> KeyMatch:
        try:
            return rule(credential, origin)
        except StaleConfig as exc:  # NATS unreachable for longer than --config-max-age
            raise IngestError(
                503,
                "config_stale",
                f"events cannot be accepted right now ({exc}); retry later",
                headers={"Retry-After": str(self._settings.retry_after_seconds)},
            ) from None
        except IngestError as error:
            if error.code in _GUESSES:
                self._auth_failures.failed(client_ip, error.code)
            raise

    async def _accept_authorized(
        self, request: IngestRequest, body: RequestBody, match: KeyMatch
    ) -> IngestResult:
        project = match.project
        if body.repaired:
            self._metrics.utf8_repaired.labels(project.id).inc()
        cors = cors_headers(request.origin) if match.key.kind == "public" and request.origin else {}
        try:
            return await self._accept(request, body, project, match, cors)
        except IngestError as error:
            error.headers.update(cors)
            error.project = project.id
            if error.errors is None:
                self._metrics.rejected(project.id, error.code)
            raise

    async def _accept(
        self,
        request: IngestRequest,
        body: RequestBody,
        project: Project,
        match: KeyMatch,
        cors: dict[str, str],
    ) -> IngestResult:
        received_at = self._clock()
        cookieless = project.settings.cookieless.mode != "off"
        if cookieless and match.key.kind != "secret":
            await self._give_cookieless_ids(request, body, project, received_at)
        accepted, rejected = self._validate(request, body)
        check_timestamp(body.sent_at, "sentAt")  # a batch's; consumers correct clock skew with it
        context, integrations = (self._batch_object(body.defaults.get(f), f) for f in _DEFAULTS)
        if match.key.kind != "secret":
            for event in accepted:
                _drop_context_ip(event)  # only server-side senders may say where an event came from
            context = _without_ip(context)
        if cookieless:  # a server's context.ip too leaves the edge only as its network
            reduce_addresses(accepted, keep_network=match.key.kind == "secret")
            context = address_reduced(context, keep_network=match.key.kind == "secret")
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
        self._check_expansion(len(request.body), accepted, context)
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
            sent_at=body.sent_at if isinstance(body.sent_at, str) else None,
            events=accepted,
            key_kind=match.key.kind,
            # Under cookieless mode the address leaves the edge only as its network (docs/privacy.md).
            ip=network_of(request.client_ip) if cookieless else request.client_ip,
            user_agent=request.user_agent,
            origin=request.origin,
            context=context,
            integrations=integrations,
        )
        started = time.perf_counter()
        try:
            json_bytes, stored_bytes = await self._publish(envelope)
        except SinkUnavailable as exc:
            # One line with the reason: an outage answers many requests, each a traceback was noise.
            log.warning("answering 503 to request %s: %s", request.request_id, exc)
            raise IngestError(
                503,
                "unavailable",
                "events cannot be stored right now; retry later",
                headers={"Retry-After": str(self._settings.retry_after_seconds)},
            ) from None
        self._metrics.publish_seconds.observe(time.perf_counter() - started)
        self._metrics.envelope(json_bytes, stored_bytes)
        self._metrics.accepted(project.id, len(accepted))
        for _, error in rejected:
            self._metrics.rejected(project.id, error.code)
            self._refusals.record(project.id, error.code, error.field, error.message)
        answer: dict[str, Any] = {
            "success": True,
            "request_id": envelope.request_id,
            "accepted": len(accepted),
        }
        if rejected:
            answer["rejected"] = [error.rejection(index) for index, error in rejected]
        return IngestResult(200, answer, cors)

    async def _give_cookieless_ids(
        self, request: IngestRequest, body: RequestBody, project: Project, now: datetime
    ) -> None:
        """The project's cookieless anonymousIds, given before validation (an event without any id
        is valid then); 503 when today's salt cannot be had."""
        ids = self._cookieless
        if ids is None:
            raise _cookieless_unavailable(self._settings.retry_after_seconds)
        timeout = project.settings.sessions.inactivity_timeout_seconds

        async def make_id(host: str) -> str:
            assert ids is not None
            return await ids.visitor(project.id, request.client_ip, request.user_agent, host, now, timeout)

        events = body.events if request.kind == BATCH else [body.events]
        if not isinstance(events, list):
            return  # not a batch: validation says so
        try:
            mode, context = project.settings.cookieless.mode, body.defaults.get("context")
            given = await assign_visitor_ids(events, mode, request.origin, context, make_id)
        except CookielessUnavailable as exc:
            log.warning("answering 503 to request %s: %s", request.request_id, exc)
            raise _cookieless_unavailable(self._settings.retry_after_seconds) from None
        self._metrics.cookieless_ids.labels(project.id).inc(given)

    async def _publish(self, envelope: Envelope) -> tuple[int, int]:
        """Publish `envelope` as one message, or as several (split.py) when one would be larger
        than JetStream takes; the bytes published as JSON and as stored. Parts are made before
        anything is published, so a request refused as too large left nothing behind; a part
        refused because the limit shrank since (the stream's config changed) is split again."""
        subject = events_subject(envelope.project)
        parts = deque(self._split(envelope, 0))
        whole = len(parts) == 1
        json_bytes = stored_bytes = 0
        while parts:
            part = parts.popleft()
            try:
                await self._sink.publish(subject, part.msg_id(envelope.request_id, whole), part.body)
            except MessageTooLarge:
                smaller = self._split(part.envelope, part.offset)
                if len(smaller) == 1:  # no smaller than before: the limit is not what the sink says
                    raise self._too_large(len(part.body)) from None
                whole = False
                parts.extendleft(reversed(smaller))
                continue
            json_bytes += len(part.encoded)
            stored_bytes += len(part.body)
        return json_bytes, stored_bytes

    def _split(self, envelope: Envelope, offset: int) -> list[Part]:
        limit = self._sink.max_body_bytes()
        try:
            return split(envelope, limit, self._settings.compress_above_bytes, offset)
        except MessageTooLarge:
            raise self._too_large(len(envelope.encode()), limit) from None

    def _too_large(self, size: int, limit: int | None = None) -> IngestError:
        log.warning(
            "refused an event whose envelope (%d bytes) is over JetStream's limit (%s bytes): "
            "lower --max-event-bytes below NATS's max_payload",
            size,
            limit if limit is not None else self._sink.max_body_bytes(),
        )
        return IngestError(
            413,
            "envelope_too_large",
            "an event is larger than the message size JetStream accepts; send smaller events",
        )

    def _validate(
        self, request: IngestRequest, body: RequestBody
    ) -> tuple[list[Event], list[tuple[int, IngestError]]]:
        settings = self._settings
        if request.kind != BATCH:
            if isinstance(body.events, SegmentEvent):
                return [body.events], []
            event = validate_event(
                body.events,
                None if request.kind == OWN_TYPE else request.kind,  # Jitsu's /api/s/e: the body's
                settings.max_event_bytes,
                len(request.body),
                settings.max_nesting_depth,
            )
            return [event], []
        batch = body.events
        if not isinstance(batch, list) or not batch:
            raise IngestError(400, "invalid_batch", "batch must be a non-empty list of events", "batch")
        if len(batch) > settings.max_batch_events:
            raise IngestError(
                413,
                "too_many_events",
                f"a batch may hold at most {settings.max_batch_events} events",
                "batch",
            )
        if body.all_typed:  # the common case, without a check per event
            return batch, []
        accepted: list[Event] = []
        rejected: list[tuple[int, IngestError]] = []
        # Each event's size matters only when the whole body could hold one over the limit.
        whole_body_fits = len(request.body) <= settings.max_event_bytes
        for index, item in enumerate(batch):
            if isinstance(item, SegmentEvent):
                accepted.append(item)
                continue
            if isinstance(item, IngestError):  # refused while translated (ingest_events)
                rejected.append((index, item))
                continue
            try:
                size = 0 if whole_body_fits else len(orjson.dumps(item))
                event = validate_event(item, None, settings.max_event_bytes, size, settings.max_nesting_depth)
            except IngestError as error:
                rejected.append((index, error))
                continue
            accepted.append(event)
        return accepted, rejected

    def _batch_object(self, value: object, field: str) -> object:
        """A batch's `context` or `integrations` (raw JSON or parsed), checked as an event's is:
        no larger than an event may be, nesting no deeper than inside one. It travels once in the
        envelope and consumers apply it to the events that have none of their own."""
        if value is None:
            return None
        settings = self._settings
        size = len(value) if isinstance(value, Raw) else len(orjson.dumps(value))
        if size > settings.max_event_bytes:
            raise IngestError(
                413,
                f"{field}_too_large",
                f"a batch's {field} may be at most {settings.max_event_bytes} bytes, as an event",
                field,
            )
        # Inside an event, the event itself is the first level.
        depth = settings.max_nesting_depth - 1
        if isinstance(value, Raw):
            data = bytes(value)
            # Counting brackets is cheap and only overcounts (brackets inside strings).
            openers = data.count(b"{") + data.count(b"[")
            if openers > depth and value_nests_deeper(orjson.loads(data), depth):
                raise _too_deep(field, settings.max_nesting_depth)
        elif value_nests_deeper(value, depth):
            raise _too_deep(field, settings.max_nesting_depth)
        return value

    def _check_expansion(self, body_bytes: int, events: list[Event], context: object) -> None:
        """What a request becomes once consumers apply its batch context to each event without
        one: bounded, so that a small request cannot make millions of bytes of rows."""
        if context is None:
            return
        context_bytes = len(context) if isinstance(context, Raw) else len(orjson.dumps(context))
        sharing = sum(
            1 for e in events if (e.context is UNSET if isinstance(e, SegmentEvent) else "context" not in e)
        )
        expanded = body_bytes + context_bytes * sharing
        limit = self._settings.max_expanded_bytes
        if expanded > limit:
            raise IngestError(
                413,
                "request_too_expensive",
                f"the batch context applied to {sharing} events makes {expanded} bytes, over the "
                f"{limit} one request may expand to; send a smaller context or put it in fewer events",
                "context",
            )


_DEFAULTS = ("context", "integrations")


def _cookieless_unavailable(retry_after: int) -> IngestError:
    return IngestError(
        503,
        "cookieless_unavailable",
        "cookieless visitor ids cannot be made right now; retry later",
        headers={"Retry-After": str(retry_after)},
    )


def _too_deep(field: str, max_depth: int) -> IngestError:
    return IngestError(
        400, "too_deep", f"the batch's {field} nests deeper than an event may ({max_depth} levels)", field
    )


def _without_ip(context: object) -> object:
    """A batch context without its `ip` (only server-side senders may set one)."""
    if isinstance(context, Raw):
        return without_context_ip(context)
    if isinstance(context, dict) and "ip" in context:
        return {k: v for k, v in context.items() if k != "ip"}
    return context


def _drop_context_ip(event: Event) -> None:
    if isinstance(event, SegmentEvent):
        if isinstance(event.context, Raw):
            event.context = without_context_ip(event.context)
        return
    context = event.get("context")
    if isinstance(context, Raw):
        event["context"] = without_context_ip(context)
    elif isinstance(context, dict) and "ip" in context:
        event["context"] = {k: v for k, v in context.items() if k != "ip"}
