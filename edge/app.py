"""The edge's HTTP app (Quart). The ingest logic itself lives in ingest.py."""

from __future__ import annotations

import logging

from quart import Quart, Response, request

from headwater.control.http import (
    ReadinessCheck,
    install_error_handlers,
    install_health_routes,
    json_response,
    new_app,
)

from .errors import IngestError, SinkUnavailable
from .ingest import (
    KeyResolver,
    RequestFacts,
    authorize,
    build_envelope,
    extract_write_key,
    parse_body,
    validate_track,
)
from .settings import EdgeSettings
from .sink import Sink
from .subjects import events_subject

log = logging.getLogger(__name__)


def create_app(settings: EdgeSettings, sink: Sink, keys: KeyResolver, readiness: ReadinessCheck) -> Quart:
    app = new_app(__name__)
    # Quart refuses a larger body with 413 from Content-Length, before reading it.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    install_error_handlers(app)

    install_health_routes(app, readiness)

    @app.post("/v1/track")
    async def track() -> Response:
        raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
        facts = RequestFacts(
            body=raw,
            authorization=request.headers.get("Authorization"),
            write_key_header=request.headers.get("X-Write-Key"),
            origin=request.headers.get("Origin"),
            user_agent=request.headers.get("User-Agent"),
            client_ip=request.remote_addr,
        )
        body = parse_body(raw)
        project, match = authorize(keys, extract_write_key(facts, body), facts.origin)
        cors = cors_headers(facts.origin) if match.key.kind == "public" else {}
        try:
            event = validate_track(body, settings.max_event_bytes, len(raw))
            envelope = build_envelope(project, match, facts, [event])
            await sink.publish(events_subject(project.id), envelope.request_id, envelope.encode())
        except IngestError as error:
            error.headers.update(cors)
            raise
        except SinkUnavailable:
            log.warning("publish failed for project %s; answering 503", project.id, exc_info=True)
            headers = {"Retry-After": str(settings.retry_after_seconds), **cors}
            raise IngestError(
                503, "unavailable", "events cannot be stored right now; retry later", None, headers
            ) from None
        return json_response({"success": True, "request_id": envelope.request_id}, 200, cors)

    def cors_headers(origin: str | None) -> dict[str, str]:
        # Called only once authorize() accepted the origin: echo it back, never a blanket `*`.
        return {"Access-Control-Allow-Origin": origin or "", "Vary": "Origin"}

    return app
