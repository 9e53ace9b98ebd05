"""The Snowplow collector endpoints: `POST /com.snowplowanalytics.snowplow/tp2` and the `GET /i` pixel.

HTTP and project resolution only: the events are translated by snowplow.py and taken by the ingest
pipeline (IngestService.ingest_events) like a Segment batch. Answers follow what Snowplow trackers
rely on: 2xx once stored; 400/401/403 (not retried by the trackers) for what no retry can fix;
429/503 with Retry-After (retried) for what a retry can; CORS with credentials, as the JavaScript
tracker posts with `credentials: include`, for allowed origins only.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from headwater.core.projects.registry import KeyMatch
from headwater.core.service.logcontext import request_id

from .errors import IngestError
from .ids import next_request_id
from .ingest import IngestRequest, IngestService, KeyResolver, authorize
from .responses import send_body, send_error, send_json, send_preflight
from .snowplow import PIXEL_PATH, TP2_PATH, SnowplowEvent, Translated, read_pixel, read_tp2, translate
from .wire import Limits

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
# The edge's body reader (asgi.py): its size limit, timeout and gzip.
ReadBody = Callable[[dict[str, str], Receive], Awaitable[bytes]]
OriginCheck = Callable[[str], bool]

SNOWPLOW_PATHS = {TP2_PATH: "snowplow_tp2", PIXEL_PATH: "snowplow_pixel"}
# A transparent 1x1 GIF, what Snowplow collectors answer to the pixel.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_PREFLIGHT_HEADERS = b"content-type, content-encoding, sp-anonymous"


class AppIdResolver(KeyResolver, Protocol):
    def resolve_app_id(self, app_id: str) -> KeyMatch | None: ...


class SnowplowCollector:
    def __init__(
        self,
        service: IngestService,
        projects: AppIdResolver,
        origin_known: OriginCheck,
        max_events: int,
        limits: Limits,
        cors_max_age_seconds: int,
    ) -> None:
        self._service = service
        self._projects = projects
        self._origin_known = origin_known
        self._max_events = max_events
        self._limits = limits
        self._cors_max_age = str(cors_max_age_seconds).encode()

    async def handle(
        self,
        route: str,
        scope: Scope,
        headers: dict[str, str],
        client_ip: str | None,
        read_body: ReadBody,
        receive: Receive,
        send: Send,
    ) -> int:
        """Serve one request to a Snowplow path (`route`: a value of SNOWPLOW_PATHS); the status
        answered. The caller counts it."""
        method = scope["method"]
        pixel = route == "snowplow_pixel"
        if method == "OPTIONS":
            return await self._preflight(headers, send)
        if method != ("GET" if pixel else "POST"):
            allow = "GET, OPTIONS" if pixel else "POST, OPTIONS"
            return await send_error(
                send, IngestError(405, "method_not_allowed", f"use {allow}"), {"Allow": allow}
            )
        origin = headers.get("origin") or (_referrer_origin(headers.get("referer")) if pixel else None)
        try:
            if pixel:
                body = scope.get("query_string", b"")
                events: list[SnowplowEvent | IngestError] = [read_pixel(body)]
            else:
                body = await read_body(headers, receive)
                events = read_tp2(body, self._max_events)
            credential = _app_id(events)
            ingest_request = IngestRequest(
                kind="batch",
                body=body,
                request_id=request_id.get() or next_request_id(),
                origin=origin,
                user_agent=headers.get("user-agent"),
                client_ip=client_ip,
            )
            limits = self._limits
            translated = [
                event if isinstance(event, IngestError) else _translated(event, credential, limits)
                for event in events
            ]
            result = await self._service.ingest_events(
                ingest_request, translated, credential, self._authorize
            )
        except IngestError as error:
            self._service.refusals.refused(error)
            return await send_error(send, error, _with_credentials(error.headers))
        except Exception:
            log.exception("unexpected error on %s", scope.get("path"))
            return await send_error(
                send, IngestError(500, "internal_error", "internal error; see the server log")
            )
        response_headers = _with_credentials(result.headers)
        if pixel:
            await send_body(
                send, 200, PIXEL_GIF, b"image/gif", {**response_headers, "Cache-Control": "no-cache"}
            )
        else:
            await send_json(send, result.status, result.body, response_headers)
        return result.status

    def _authorize(self, aid: str, origin: str | None) -> KeyMatch:
        """`aid` as a project key (Segment's rules, ingest.authorize), else as an app id a project
        lists: a public name, so a public key's origin rule, unless the project accepts app-id
        events without an Origin (server-side trackers)."""
        try:
            return authorize(self._projects, aid, origin)
        except IngestError as error:
            if error.code != "unknown_key":
                raise
        match = self._projects.resolve_app_id(aid)
        if match is None:
            raise IngestError(
                401, "unknown_key", "aid is neither a project's key nor an app id a project lists", "aid"
            )
        project = match.project
        if not project.enabled:
            raise _of_project(
                IngestError(403, "project_disabled", f"project {project.id!r} is disabled"), project.id
            )
        if origin is None and project.settings.snowplow.allow_without_origin:
            return match
        if not project.origin_policy.allows(origin):
            refused = IngestError(
                403,
                "origin_not_allowed",
                f"origin {origin!r} is not among the allowed origins of project {project.id!r}"
                if origin
                else "app ids are accepted only from the project's allowed origins (no Origin header)",
                "aid",
            )
            raise _of_project(refused, project.id)
        return match

    async def _preflight(self, headers: dict[str, str], send: Send) -> int:
        """CORS preflights carry no app id: allow an origin that some enabled project allows."""
        return await send_preflight(
            send,
            headers.get("origin"),
            self._origin_known,
            methods=b"POST, GET, OPTIONS",
            allow_headers=_PREFLIGHT_HEADERS,
            max_age=self._cors_max_age,
            credentials=True,
        )


def _of_project(error: IngestError, project_id: str) -> IngestError:
    error.project = project_id
    return error


def _app_id(events: list[SnowplowEvent | IngestError]) -> str:
    """The request's `aid`: its first event's (a tracker sends one app id)."""
    for event in events:
        if isinstance(event, dict):
            aid = event.get("aid")
            if aid:
                return aid
    raise IngestError(401, "missing_key", "send the project's key or an app id it lists as aid", "aid")


def _translated(event: SnowplowEvent, credential: str, limits: Limits) -> Translated:
    if event.get("aid", credential) != credential:
        return IngestError(400, "aid_mismatch", "every event of a request must have the same aid", "aid")
    return translate(event, limits)


def _referrer_origin(referrer: str | None) -> str | None:
    """A pixel loaded by an <img> has no Origin header; its page's Referer names the site."""
    if not referrer:
        return None
    parts = urlsplit(referrer)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def _with_credentials(headers: dict[str, str]) -> dict[str, str]:
    if "Access-Control-Allow-Origin" in headers:
        return {**headers, "Access-Control-Allow-Credentials": "true"}
    return headers
