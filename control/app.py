"""The control-plane HTTP API the host application calls (JSON under /v1, admin bearer token)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import msgspec
from quart import Blueprint, Quart, Response, g, request
from werkzeug.routing import BaseConverter

from headwater.console.routes import install_console
from headwater.core.projects.project import Project, validate_project_id
from headwater.core.service.authfailures import AuthFailureLimits, AuthFailures
from headwater.core.service.errors import APIError
from headwater.core.service.httpapp import (
    ReadinessCheck,
    install_error_handlers,
    install_health_routes,
    json_response,
    new_app,
    read_json_object,
)
from headwater.core.service.validation import convert_body

from .anonymisation import EventPreviewer, preview
from .auth import authenticate_admin
from .console_schemas import LIVE_DEFAULT_LIMIT, LIVE_MAX_LIMIT, LiveAnswer, OverviewRequest
from .funnels import run_funnel, run_trend
from .health import Installation
from .idempotency import validate_idempotency_key
from .imports import ImportService
from .live import last_events, refusals_of
from .openapi import openapi_document
from .overview import run_overview
from .paths import run_paths
from .patterns import DEFAULT_LIMITS, mining_slots, run_patterns
from .patterns_schemas import PatternsRequest
from .query import ReadOnlyQueries
from .saved_funnels import SavedFunnelService
from .schemas import FunnelRequest, FunnelTrendRequest, PathsRequest, PurgeConfirmation, Query, RotateKey
from .service import ProjectService
from .settings import ControlSettings
from .store import ProjectStore
from .subjects import SubjectJobs
from .subjects_export import export_lines, resolve_person
from .subjects_schemas import DataSubjectRequest

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500


def _etag(revision: int) -> dict[str, str]:
    return {"ETag": f'"{revision}"'}


def _project_body(project: Project, revision: int) -> dict[str, Any]:
    return {"project": project.public_view(), "revision": revision}


def _if_match() -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":  # `*`: whatever the current revision is
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not (value.isascii() and value.isdigit() and len(value) <= 19):
        raise APIError(
            400, "invalid_if_match", 'If-Match must be a revision (the ETag), e.g. "7"', "If-Match"
        )
    return int(value)


def _page_size() -> int:
    return _limit(DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _limit(default: int, maximum: int) -> int:
    """The `limit` query parameter: an integer from 1 to `maximum`."""
    raw = request.args.get("limit", str(default))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= maximum:
        raise APIError(400, "invalid_field", f"limit must be an integer from 1 to {maximum}", "limit")
    return int(raw)


class FunnelIdConverter(BaseConverter):
    """A saved funnel's id (saved_funnels.new_funnel_id): `funnels/query` is never one."""

    regex = "[a-z2-7]{12}"


class JobIdConverter(BaseConverter):
    """A data-subject job's id (subjects.new_job_id)."""

    regex = "[a-z2-7]{16}"


def create_app(
    settings: ControlSettings,
    store: ProjectStore,
    service: ProjectService,
    queries: ReadOnlyQueries,
    readiness: ReadinessCheck,
    funnels: SavedFunnelService | None = None,
    subjects: SubjectJobs | None = None,
    previewer: EventPreviewer | None = None,
    imports: ImportService | None = None,
    installation: Installation | None = None,
) -> Quart:
    app = new_app(__name__)
    app.url_map.converters["funnel_id"] = FunnelIdConverter
    app.url_map.converters["job_id"] = JobIdConverter
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    install_error_handlers(app)

    install_health_routes(app, readiness)
    install_console(app)  # /console/: static files and no data; its pages call /v1 with the token

    api = Blueprint("v1", __name__, url_prefix="/v1")

    auth_failures = AuthFailures("admin token", AuthFailureLimits(burst=settings.auth_failures_burst))

    @api.before_request
    async def require_admin() -> None:
        auth_failures.check(request.remote_addr)  # a guesser is slowed down before any comparison
        try:
            g.actor = authenticate_admin(request.headers.get("Authorization"), settings.admin_tokens).name
        except APIError as error:
            if error.code == "invalid_admin_token":
                auth_failures.failed(request.remote_addr, error.code)
            raise

    @api.get("/openapi.json")
    async def openapi() -> Response:
        return json_response(openapi_document())

    @api.post("/projects")
    async def create_project() -> Response:
        raw_key = request.headers.get("Idempotency-Key")
        key = validate_idempotency_key(raw_key) if raw_key is not None else None
        answer, replayed = await service.create(await read_json_object(), g.actor, key)
        headers = _etag(answer.body["revision"])
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return json_response(answer.body, answer.status, headers)

    @api.get("/projects")
    async def list_projects() -> Response:
        limit = _page_size()
        after = request.args.get("after")
        if after is not None:
            validate_project_id(after, "after")
        projects, next_after = await store.list(after=after, limit=limit)
        return json_response({"projects": [p.public_view() for p in projects], "next_after": next_after})

    @api.get("/projects/<project_id>")
    async def get_project(project_id: str) -> Response:
        project, revision = await store.get(validate_project_id(project_id))
        return json_response(_project_body(project, revision), 200, _etag(revision))

    @api.patch("/projects/<project_id>")
    async def update_project(project_id: str) -> Response:
        project, revision = await service.update(project_id, await read_json_object(), g.actor, _if_match())
        return json_response(_project_body(project, revision), 200, _etag(revision))

    @api.post("/projects/<project_id>/keys/rotate")
    async def rotate_key(project_id: str) -> Response:
        rotation = convert_body(await read_json_object(), RotateKey)
        project, revision, key, old_expiry = await service.rotate_key(project_id, rotation, g.actor)
        answer = {
            **_project_body(project, revision),
            "kind": rotation.kind,
            "key": key,
            "previous_keys_expire_at": old_expiry,
        }
        return json_response(answer, 200, _etag(revision))

    @api.delete("/projects/<project_id>")
    async def delete_project(project_id: str) -> Response:
        purge = request.args.get("purge", "false").lower()
        if purge not in ("true", "false"):
            raise APIError(400, "invalid_field", "purge must be true or false", "purge")
        # A body is optional, but one that is sent must be a valid PurgeConfirmation either way.
        confirmation = PurgeConfirmation()
        if await request.get_data(cache=True, as_text=False, parse_form_data=False):
            confirmation = convert_body(await read_json_object(), PurgeConfirmation)
        if purge == "false":
            project, revision = await service.disable(project_id, g.actor)
            return json_response(_project_body(project, revision), 200, _etag(revision))
        result = await service.purge(project_id, request.args.get("confirm", confirmation.confirm), g.actor)
        return json_response(result)

    @api.post("/projects/<project_id>/query")
    async def query_project(project_id: str) -> Response:
        await store.get(validate_project_id(project_id))  # 404 for an unknown project
        query = convert_body(await read_json_object(), Query)
        result = await asyncio.to_thread(queries.run, project_id, query.sql)
        return json_response({"columns": result.columns, "rows": result.rows})

    def the_installation() -> Installation:
        if installation is None:
            raise APIError(503, "health_unavailable", "node reports are not configured")
        return installation

    @api.get("/health")
    async def health() -> Response:
        return json_response(await the_installation().health())

    @api.get("/projects/<project_id>/live")
    async def live(project_id: str) -> Response:
        await store.get(validate_project_id(project_id))  # 404 for an unknown project
        limit = _limit(LIVE_DEFAULT_LIMIT, LIVE_MAX_LIMIT)
        reports = await the_installation().reports()
        events = await asyncio.to_thread(last_events, queries, project_id, limit, datetime.now(UTC))
        answer = LiveAnswer(events, refusals_of(project_id, reports))
        return json_response(msgspec.to_builtins(answer))

    @api.post("/projects/<project_id>/overview")
    async def overview(project_id: str) -> Response:
        await store.get(validate_project_id(project_id))  # 404 for an unknown project
        asked = convert_body(await read_json_object(), OverviewRequest)
        return json_response(await asyncio.to_thread(run_overview, queries, project_id, asked))

    @api.post("/projects/<project_id>/funnels/query")
    async def query_funnel(project_id: str) -> Response:
        project, _ = await store.get(validate_project_id(project_id))  # 404 for an unknown project
        funnel = convert_body(await read_json_object(), FunnelRequest)
        rules = project.settings.sessions
        return json_response(await asyncio.to_thread(run_funnel, queries, project_id, funnel, rules))

    @api.post("/projects/<project_id>/funnels/trend")
    async def funnel_trend(project_id: str) -> Response:
        project, _ = await store.get(validate_project_id(project_id))  # 404 for an unknown project
        trend = convert_body(await read_json_object(), FunnelTrendRequest)
        now = datetime.now(UTC)
        return json_response(
            await asyncio.to_thread(run_trend, queries, project_id, trend, now, project.settings.sessions)
        )

    def saved_funnels() -> SavedFunnelService:
        if funnels is None:
            raise APIError(503, "saved_funnels_unavailable", "saved funnels are not configured")
        return funnels

    def funnel_answer(funnel: object, status: int = 200) -> Response:
        body = msgspec.to_builtins(funnel)
        return json_response(body, status, _etag(body["revision"]))

    @api.get("/projects/<project_id>/funnels")
    async def list_saved_funnels(project_id: str) -> Response:
        listed = await saved_funnels().list_all(project_id)
        return json_response({"funnels": msgspec.to_builtins(listed)})

    @api.post("/projects/<project_id>/funnels")
    async def create_saved_funnel(project_id: str) -> Response:
        created = await saved_funnels().create(project_id, await read_json_object(), g.actor)
        return funnel_answer(created, 201)

    @api.get("/projects/<project_id>/funnels/<funnel_id:funnel_id>")
    async def get_saved_funnel(project_id: str, funnel_id: str) -> Response:
        return funnel_answer(await saved_funnels().get(project_id, funnel_id))

    @api.put("/projects/<project_id>/funnels/<funnel_id:funnel_id>")
    async def replace_saved_funnel(project_id: str, funnel_id: str) -> Response:
        if_match = _if_match()
        body = await read_json_object()
        return funnel_answer(await saved_funnels().replace(project_id, funnel_id, body, g.actor, if_match))

    @api.delete("/projects/<project_id>/funnels/<funnel_id:funnel_id>")
    async def delete_saved_funnel(project_id: str, funnel_id: str) -> Response:
        await saved_funnels().delete(project_id, funnel_id, g.actor, _if_match())
        return Response(status=204)

    @api.post("/projects/<project_id>/funnels/<funnel_id:funnel_id>/query")
    async def run_saved_funnel(project_id: str, funnel_id: str) -> Response:
        return json_response(await saved_funnels().run(project_id, funnel_id, await read_json_object()))

    @api.post("/projects/<project_id>/funnels/<funnel_id:funnel_id>/trend")
    async def saved_funnel_trend(project_id: str, funnel_id: str) -> Response:
        return json_response(await saved_funnels().trend(project_id, funnel_id, await read_json_object()))

    @api.post("/projects/<project_id>/funnels/<funnel_id:funnel_id>/anomalies")
    async def saved_funnel_anomalies(project_id: str, funnel_id: str) -> Response:
        body = await read_json_object()
        return json_response(await saved_funnels().anomalies(project_id, funnel_id, body))

    @api.post("/projects/<project_id>/paths/query")
    async def query_paths(project_id: str) -> Response:
        await store.get(validate_project_id(project_id))  # 404 for an unknown project
        paths = convert_body(await read_json_object(), PathsRequest)
        return json_response(await asyncio.to_thread(run_paths, queries, project_id, paths))

    patterns_limits = replace(
        DEFAULT_LIMITS,
        max_journeys=settings.patterns_max_journeys,
        max_steps=settings.patterns_max_steps,
        max_seconds=settings.patterns_max_seconds,
    )
    patterns_slots = mining_slots()

    @api.post("/projects/<project_id>/patterns/query")
    async def query_patterns(project_id: str) -> Response:
        project, _ = await store.get(validate_project_id(project_id))  # 404 for an unknown project
        asked = convert_body(await read_json_object(), PatternsRequest)
        rules = project.settings.sessions
        return json_response(
            await asyncio.to_thread(
                run_patterns, queries, project_id, asked, rules, patterns_limits, patterns_slots
            )
        )

    def data_subjects() -> SubjectJobs:
        if subjects is None:
            raise APIError(503, "data_subjects_unavailable", "data-subject jobs are not configured")
        return subjects

    @api.post("/projects/<project_id>/data-subjects/delete")
    async def delete_data_subject(project_id: str) -> Response:
        job_id = await data_subjects().submit(project_id, await read_json_object(), g.actor)
        return json_response({"job_id": job_id}, 202)

    @api.get("/projects/<project_id>/data-subjects/jobs/<job_id:job_id>")
    async def data_subject_job(project_id: str, job_id: str) -> Response:
        return json_response(await data_subjects().get(project_id, job_id))

    @api.post("/projects/<project_id>/data-subjects/export")
    async def export_data_subject(project_id: str) -> Response:
        jobs = data_subjects()
        await store.get(validate_project_id(project_id))  # 404 for an unknown project
        asked = convert_body(await read_json_object(), DataSubjectRequest)
        person = await asyncio.to_thread(resolve_person, queries, project_id, asked)
        await jobs.record_export(g.actor, project_id, asked)
        return Response(export_lines(queries, project_id, person), 200, mimetype="application/x-ndjson")

    @api.post("/projects/<project_id>/anonymisation/preview")
    async def preview_anonymisation(project_id: str) -> Response:
        if previewer is None:
            raise APIError(503, "preview_unavailable", "the anonymisation preview is not configured")
        return json_response(await preview(store, service, previewer, project_id, await read_json_object()))

    def import_service() -> ImportService:
        if imports is None:
            raise APIError(503, "imports_unavailable", "imports are not configured")
        return imports

    @api.post("/projects/<project_id>/imports/batches")
    async def import_batch(project_id: str) -> Response:
        answer = await import_service().add_batch(project_id, await read_json_object())
        return json_response(msgspec.to_builtins(answer))

    @api.post("/projects/<project_id>/imports/activate-version")
    async def import_activate_version(project_id: str) -> Response:
        answer = await import_service().activate_version(project_id, await read_json_object())
        return json_response(msgspec.to_builtins(answer))

    @api.put("/projects/<project_id>/imports/state")
    async def import_state(project_id: str) -> Response:
        answer = await import_service().save_state(project_id, await read_json_object())
        return json_response(msgspec.to_builtins(answer))

    @api.get("/projects/<project_id>/imports")
    async def list_imports(project_id: str) -> Response:
        return json_response(msgspec.to_builtins(await import_service().listing(project_id)))

    app.register_blueprint(api)
    return app
