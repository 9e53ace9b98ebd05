"""The OpenAPI 3.1 document of the control API (served at /v1/openapi.json), generated.

The bodies' schemas come from their msgspec Structs (schemas.py, and core/projects/settings.py for
the settings), the same types that validate requests; the table in `routes()` adds what a type
does not say: path, method, operation id, parameters, answers and error statuses. A new endpoint
is a struct and a row there. tests/test_openapi_fuzz.py fuzzes the live API from this document and
checks every answer against it; tests/test_control_schemas.py checks that it lists exactly the
app's routes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from headwater.console import routes as console

from . import console_schemas, patterns_schemas, schemas, subjects_schemas
from .anonymisation import PreviewAnswer, PreviewRequest
from .console_schemas import (
    LIVE_DEFAULT_LIMIT,
    LIVE_MAX_LIMIT,
    HealthAnswer,
    LiveAnswer,
    OverviewAnswer,
    OverviewRequest,
)
from .idempotency import MAX_KEY_LENGTH
from .imports_schemas import (
    ActivateVersionAnswer,
    ActivateVersionRequest,
    ImportBatchAnswer,
    ImportBatchRequest,
    ImportsListing,
    ImportStateAnswer,
    ImportStateRequest,
)
from .patterns_schemas import PatternsAnswer, PatternsRequest
from .schemas import (
    CreatedProject,
    CreateProject,
    Error,
    FunnelAnomaliesAnswer,
    FunnelAnswer,
    FunnelId,
    FunnelRequest,
    FunnelTrendAnswer,
    FunnelTrendRequest,
    Health,
    PathsAnswer,
    PathsRequest,
    ProjectAnswer,
    ProjectId,
    ProjectPage,
    ProjectPatch,
    PurgeConfirmation,
    PurgedProject,
    Query,
    QueryResult,
    Readiness,
    RotatedKey,
    RotateKey,
    SavedFunnel,
    SavedFunnelAnomaliesRun,
    SavedFunnelList,
    SavedFunnelRequest,
    SavedFunnelRun,
    SavedFunnelTrendRun,
)
from .subjects_schemas import DataSubjectJob, DataSubjectJobCreated, DataSubjectRequest, JobId

Schema = dict[str, Any]
# A struct, one of several structs, a schema as it is, or None (no body: 204).
Body = type | tuple[type, ...] | Schema | None

JSON = "application/json"
# Error codes by status. `not_found` is the router's: a path that matches no route (e.g. a project id
# with a `/` in it) never reaches the operation.
ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: (
        "invalid_json",
        "invalid_field",
        "invalid_project_id",
        "invalid_origin",
        "invalid_idempotency_key",
        "invalid_if_match",
        "confirmation_required",
        "query_failed",
        "too_deep",
        "query_syntax_error",
        "invalid_event",
        "invalid_schema",
        "invalid_record",
    ),
    401: ("missing_admin_token",),
    403: ("invalid_admin_token", "query_not_allowed"),
    404: ("project_not_found", "not_found", "funnel_not_found", "job_not_found"),
    409: (
        "project_exists",
        "update_conflict",
        "app_id_taken",
        "funnel_limit_reached",
        "key_properties_changed",
    ),
    412: ("revision_mismatch",),
    413: ("payload_too_large", "state_too_large"),
    422: ("idempotency_key_reused", "query_too_expensive", "too_many_linked_ids"),
    429: ("too_many_auth_failures", "too_many_queries", "too_many_jobs"),
    503: (
        "clickhouse_unavailable",
        "saved_funnels_unavailable",
        "data_subjects_unavailable",
        "preview_unavailable",
        "imports_unavailable",
        "health_unavailable",
        "nats_unavailable",
    ),
}
ERROR_DESCRIPTIONS = {
    400: "The request is invalid; `field` names the part at fault when there is one.",
    401: "No admin token: send `Authorization: Bearer <token>`.",
    403: "The admin token is not valid (`invalid_admin_token`), or the query reaches outside the "
    "project or is not a SELECT (`query_not_allowed`; the message names what was refused).",
    404: "No such project (`project_not_found`), no such saved funnel (`funnel_not_found`), no such "
    "data-subject job (`job_not_found`), or no such route (`not_found`).",
    409: "Conflict with the project's current state (`funnel_limit_reached`: it has 100 saved funnels).",
    412: "The project or saved funnel changed since the revision given in `If-Match`.",
    413: "The request body is larger than the configured limit.",
    422: "The Idempotency-Key was used with a different request body (`idempotency_key_reused`), or "
    "the query exceeded its memory, time or result-row limit (`query_too_expensive`), or a user id to "
    "export appears with more than 1,000 anonymous ids (`too_many_linked_ids`).",
    429: "Too many wrong admin tokens from this address (`too_many_auth_failures`), or as many queries "
    "as the control plane allows are running (`too_many_queries`), or 1,000 data-subject jobs are "
    "waiting (`too_many_jobs`); retry after `Retry-After` seconds.",
    503: "ClickHouse or NATS cannot be reached, or a part of the control plane is not configured.",
}


COMPONENTS = "#/components/schemas/{name}"


def _ref(name: str) -> Schema:
    return {"$ref": COMPONENTS.format(name=name)}


def _json(schema: Schema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


ETAG_HEADER = {
    "description": "The project's KV revision, for `If-Match` on a later PATCH.",
    "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
}
REQUIRED_ETAG = {**ETAG_HEADER, "required": True}


@dataclass(frozen=True, slots=True)
class Answer:
    description: str
    body: Body
    headers: Mapping[str, Schema] = field(default_factory=dict)
    links: bool = False  # to the operations on the project it names (create's answer)
    funnel_links: bool = False  # to the operations on the saved funnel it is (create's answer)
    media_type: str = JSON


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    operation_id: str
    summary: str
    answers: Mapping[int, Answer]
    errors: tuple[int, ...] = ()
    request: type | None = None
    parameters: tuple[Schema, ...] = ()
    description: str | None = None
    public: bool = False  # no admin token needed
    request_required: bool = True


def _parameter(name: str, where: str, schema: Schema, description: str | None = None) -> Schema:
    parameter: Schema = {"name": name, "in": where}
    if where == "header":
        parameter["required"] = False
    if description:
        parameter["description"] = description
    return {**parameter, "schema": schema}


PROJECT_ANSWER = Answer("The project and its revision.", ProjectAnswer, {"ETag": REQUIRED_ETAG})
ADMIN_ERRORS = (401, 403, 429)


def routes() -> tuple[Route, ...]:
    from .app import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE  # app imports this module

    return (
        Route("get", "/healthz", "health", "Liveness", {200: Answer("Alive.", Health)}, public=True),
        Route(
            "get",
            "/readyz",
            "readiness",
            "Readiness: connected to NATS",
            {200: Answer("Ready.", Readiness), 503: Answer("Not ready.", Readiness)},
            public=True,
        ),
        Route(
            "get",
            "/v1/openapi.json",
            "openapiDocument",
            "This document",
            {200: Answer("The OpenAPI document.", {"type": "object"})},
            ADMIN_ERRORS,
        ),
        Route(
            "post",
            "/v1/projects",
            "createProject",
            "Create a project: its database, its config and a public and a secret key",
            {
                201: Answer(
                    "Created (or the replayed answer of an earlier create).",
                    CreatedProject,
                    {
                        "ETag": REQUIRED_ETAG,
                        "Idempotent-Replayed": {
                            "description": "Present when this is the stored answer of an earlier "
                            "request with the same Idempotency-Key.",
                            "schema": {"type": "string", "enum": ["true"]},
                        },
                    },
                    links=True,
                )
            },
            (400, 401, 403, 409, 413, 422, 429),
            CreateProject,
            (
                _parameter(
                    "Idempotency-Key",
                    "header",
                    {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_KEY_LENGTH,
                        # Printable characters (a header is read as Latin-1).
                        "pattern": r"^[\x20-\x7e\xa1-\xac\xae-\xff]+$",
                    },
                    "A retry with the same key and body gets the first answer again (with "
                    "`Idempotent-Replayed: true`) for 24 hours. Use a random UUID.",
                ),
            ),
        ),
        Route(
            "get",
            "/v1/projects",
            "listProjects",
            "Projects in id order, a page at a time",
            {200: Answer("A page of projects.", ProjectPage)},
            (400, 401, 403, 429),
            parameters=(
                _parameter(
                    "limit",
                    "query",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
                ),
                _parameter(
                    "after",
                    "query",
                    _ref("ProjectId"),
                    "Start after this project id (`next_after` of the previous page).",
                ),
            ),
        ),
        Route(
            "get",
            "/v1/projects/{project_id}",
            "getProject",
            "One project, with its revision",
            {200: PROJECT_ANSWER},
            (400, 401, 403, 404, 429),
        ),
        Route(
            "patch",
            "/v1/projects/{project_id}",
            "updateProject",
            "Change a project; fields not named keep their values",
            {200: PROJECT_ANSWER},
            (400, 401, 403, 404, 409, 412, 413, 429),
            ProjectPatch,
            (
                _parameter(
                    "If-Match",
                    "header",
                    {"type": "string", "pattern": r'^(\*|(W/)?"[0-9]+")$'},
                    "Apply only if the project is still at this revision (its ETag); otherwise 412. "
                    "Without it, or with `*`, the change is applied to the newest revision.",
                ),
            ),
        ),
        Route(
            "delete",
            "/v1/projects/{project_id}",
            "deleteProject",
            "Disable a project, or purge it with all its events",
            {
                200: Answer(
                    "Disabled (the project, with an ETag) or purged.",
                    (ProjectAnswer, PurgedProject),
                    {"ETag": ETAG_HEADER},
                )
            },
            (400, 401, 403, 404, 409, 413, 429),
            PurgeConfirmation,
            parameters=(
                _parameter("purge", "query", {"type": "boolean", "default": False}),
                _parameter(
                    "confirm",
                    "query",
                    {"type": "string"},
                    "The project id, required with `purge=true` (it may also be sent as a JSON body "
                    '`{"confirm": "<project id>"}`).',
                ),
            ),
            description="Without `purge=true` the project is disabled (its keys stop working) and "
            "kept. With `purge=true&confirm=<project id>` its messages are removed from JetStream, its "
            "database is dropped and its config deleted.",
            request_required=False,
        ),
        Route(
            "post",
            "/v1/projects/{project_id}/keys/rotate",
            "rotateProjectKey",
            "Issue a new key; the current ones of that kind expire after a grace period",
            {200: Answer("The new key and the project.", RotatedKey, {"ETag": REQUIRED_ETAG})},
            (400, 401, 403, 404, 409, 413, 429),
            RotateKey,
        ),
        Route(
            "post",
            "/v1/projects/{project_id}/query",
            "queryProject",
            "Read-only SQL in the project's database",
            {200: Answer("The result.", QueryResult)},
            (400, 401, 403, 404, 413, 422, 429, 503),
            Query,
            description="One SELECT confined to the project's database: ClickHouse parses it and "
            "anything else (another database, `system` tables, table functions that reach files or "
            "servers, dictionaries, KILL, SETTINGS, writes) is `403 query_not_allowed`; it runs with "
            "`readonly=1` and limits on memory, time and rows (`422 query_too_expensive`) and a cap on "
            "concurrent queries (`429`).",
        ),
        Route(
            "post",
            "/v1/projects/{project_id}/funnels/query",
            "queryFunnel",
            "How far people get through a funnel",
            {
                200: Answer(
                    "Per step: who reached it, conversion, drop-off, time from the previous step.",
                    FunnelAnswer,
                )
            },
            (400, 401, 403, 404, 413, 422, 429, 503),
            FunnelRequest,
            description="People (the user id, else the anonymous id) with events in [from, to), the "
            "furthest each gets through the steps within the window (docs/funnels.md has the exact "
            "definitions). Runs read-only with the limits of `/query` (`422 query_too_expensive`).",
        ),
        Route(
            "post",
            "/v1/projects/{project_id}/funnels/trend",
            "funnelTrend",
            "A funnel's conversion day by day",
            {
                200: Answer(
                    "Per UTC day of [from, to): the funnel of the people who entered it that day.",
                    FunnelTrendAnswer,
                )
            },
            (400, 401, 403, 404, 413, 422, 429, 503),
            FunnelTrendRequest,
            description="Day D's funnel counts the attempts whose first step lies on D within [from, to), "
            'converting up to a window later (docs/funnels.md, "Daily trend"); at most 400 days. '
            "Runs read-only with the limits of `/query`.",
        ),
        Route(
            "post",
            "/v1/projects/{project_id}/paths/query",
            "queryPaths",
            "The most frequent journeys from a start point or to an end point",
            {
                200: Answer(
                    "The heaviest edges between (depth, step) nodes, the nodes they touch, the people.",
                    PathsAnswer,
                )
            },
            (400, 401, 403, 404, 413, 422, 429, 503),
            PathsRequest,
            description="Per person (the user id, else the anonymous id) with events in [from, to): "
            "their steps (page paths cleaned, repeats collapsed), from their first step matching "
            "`start` or to their last matching `end`, `steps` deep; as nodes and weighted edges for "
            "a Sankey chart (docs/paths.md has the exact definitions). A cleaning regex that does "
            "not compile is `400 invalid_field` naming it. Runs read-only with the limits of `/query`.",
        ),
        Route(
            "post",
            "/v1/projects/{project_id}/patterns/query",
            "queryPatterns",
            "Suggested funnels, what converters do differently, and the next-step model",
            {
                200: Answer(
                    "The suggested funnels by leverage, each with a funnel definition; with a goal, "
                    "its drivers; the next-step model's held-out accuracy.",
                    PatternsAnswer,
                )
            },
            (400, 401, 403, 404, 413, 422, 429, 503),
            PatternsRequest,
            description="Every session's (or person's) steps in [from, to) (page paths cleaned, "
            "repeats collapsed, copies of a message once) are mined for frequent sequential patterns "
            "with gaps, ranked by leverage over what their parts predict; with a `goal`, the patterns "
            "before it whose presence changes the chance of reaching it (Fisher's exact test, "
            "Benjamini-Hochberg). More journeys than the server's limit (200,000 by default) is "
            "`422 too_many_journeys` (ask for a shorter range); more frequent patterns than its limit "
            "`422 too_many_patterns` (raise `min_support`); mining past the server's time limit (120 s by "
            "default) `422 mining_timed_out`. Synchronous: the answer comes when the "
            "mining ends (seconds per 10,000 journeys; docs/patterns.md). Runs the read with the "
            "limits of `/query`.",
        ),
        Route(
            "post",
            "/v1/projects/{project_id}/anonymisation/preview",
            "previewAnonymisation",
            "What the consumers would store for a sample event under the anonymisation rules",
            {
                200: Answer(
                    "The event's stored columns after the rules, and which rule changed which field.",
                    PreviewAnswer,
                )
            },
            (400, 401, 403, 404, 413, 429, 503),
            PreviewRequest,
            description="Builds the row with the consumers' own code under the project's saved rules "
            "(or `rules`, to try before saving them) and its hash key; stores nothing. A rule that "
            "cannot be applied is `400 invalid_field` naming it (`rules[2].pattern`), an event that "
            "could not be stored `400 invalid_event` (docs/privacy.md, Anonymisation rules).",
        ),
        *_saved_funnel_routes(),
        *_data_subject_routes(),
        *_import_routes(),
        *_console_routes(),
        *_console_page_routes(),
    )


SAVED_FUNNEL = Answer("The saved funnel and its revision.", SavedFunnel, {"ETag": REQUIRED_ETAG})
IF_MATCH = _parameter(
    "If-Match",
    "header",
    {"type": "string", "pattern": r'^(\*|(W/)?"[0-9]+")$'},
    "Apply only if the saved funnel is still at this revision (its ETag); otherwise 412. "
    "Without it, or with `*`, the change is applied to the newest revision.",
)


def _saved_funnel_routes() -> tuple[Route, ...]:
    """docs/funnels.md, "Saved funnels"."""
    one = "/v1/projects/{project_id}/funnels/{funnel_id}"
    return (
        Route(
            "get",
            "/v1/projects/{project_id}/funnels",
            "listSavedFunnels",
            "The project's saved funnels, by name",
            {
                200: Answer(
                    "Every saved funnel of the project (100 at most), by name then id.", SavedFunnelList
                )
            },
            (400, 401, 403, 404, 429),
        ),
        Route(
            "post",
            "/v1/projects/{project_id}/funnels",
            "createSavedFunnel",
            "Save a funnel's definition under a name",
            {201: Answer("Saved.", SavedFunnel, {"ETag": REQUIRED_ETAG}, funnel_links=True)},
            (400, 401, 403, 404, 409, 413, 422, 429, 503),
            SavedFunnelRequest,
            description="The definition is validated as `funnels/query` validates the same fields "
            "(`400 invalid_field` naming the same field). A project keeps at most 100 saved funnels "
            "(`409 funnel_limit_reached`).",
        ),
        Route(
            "get", one, "getSavedFunnel", "One saved funnel", {200: SAVED_FUNNEL}, (400, 401, 403, 404, 429)
        ),
        Route(
            "put",
            one,
            "replaceSavedFunnel",
            "Replace a saved funnel's name and definition",
            {200: SAVED_FUNNEL},
            (400, 401, 403, 404, 409, 412, 413, 422, 429, 503),
            SavedFunnelRequest,
            (IF_MATCH,),
        ),
        Route(
            "delete",
            one,
            "deleteSavedFunnel",
            "Delete a saved funnel",
            {204: Answer("Deleted.", None)},
            (400, 401, 403, 404, 412, 429),
            parameters=(IF_MATCH,),
        ),
        Route(
            "post",
            f"{one}/query",
            "runSavedFunnel",
            "Run a saved funnel over a time range",
            {200: Answer("The answer `funnels/query` gives for the saved definition.", FunnelAnswer)},
            (400, 401, 403, 404, 413, 422, 429, 503),
            SavedFunnelRun,
            description="The saved definition with `from`, `to` and optionally `people`, answered as "
            "`POST /v1/projects/{project_id}/funnels/query` answers it.",
        ),
        Route(
            "post",
            f"{one}/trend",
            "savedFunnelTrend",
            "A saved funnel's conversion day by day",
            {200: Answer("The answer `funnels/trend` gives for the saved definition.", FunnelTrendAnswer)},
            (400, 401, 403, 404, 413, 422, 429, 503),
            SavedFunnelTrendRun,
            description="The saved definition (its breakdown left out) with `from` and `to`, answered as "
            "`POST /v1/projects/{project_id}/funnels/trend` answers it.",
        ),
        Route(
            "post",
            f"{one}/anomalies",
            "savedFunnelAnomalies",
            "The days a saved funnel's conversion left its expected band",
            {
                200: Answer(
                    "Every day of the trend with its band and status, the method's parameters, and "
                    "how many days were flagged.",
                    FunnelAnomaliesAnswer,
                )
            },
            (400, 401, 403, 404, 413, 422, 429, 503),
            SavedFunnelAnomaliesRun,
            description="The saved funnel's daily trend over `from`/`to` (as `trend` answers it); each "
            "day's conversions judged against a beta-binomial band from the days before it in the "
            "range: their rate (of the same weekday), their over-dispersion, Bonferroni across the "
            'days judged (docs/patterns.md, "Anomalies"). Settings that do not go together are '
            "`400 invalid_field` naming the field.",
        ),
    )


def _console_routes() -> tuple[Route, ...]:
    """What the console reads: docs/control-api.md, "Health", "Live" and "Overview"."""
    return (
        Route(
            "get",
            "/v1/health",
            "installationHealth",
            "Every role's readiness, the consumers' lag, the streams' usage, the dead letters",
            {200: Answer("The installation now.", HealthAnswer)},
            (401, 403, 429, 503),
            description="`nodes`: the report each role of each process publishes every few seconds in "
            "the KV bucket HW_NODES (its /readyz answer; gone 30 s after a node stops); `consumers` "
            "and `streams` from the JetStream API; `refusals_without_project`: the edges' refusals of "
            "the last hour that named no known project (an unknown key, an unreadable body).",
        ),
        Route(
            "get",
            "/v1/projects/{project_id}/live",
            "liveEvents",
            "The last events stored for the project, and why the edges refused its events lately",
            {200: Answer("The events, newest first, and the refusals of the last hour.", LiveAnswer)},
            (400, 401, 403, 404, 422, 429, 503),
            parameters=(
                _parameter(
                    "limit",
                    "query",
                    {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": LIVE_MAX_LIMIT,
                        "default": LIVE_DEFAULT_LIMIT,
                    },
                    "How many events.",
                ),
            ),
            description="Events received in the last 7 days, newest first by `received_at`, each message "
            "once, read from the project's `events` table with the limits of `/query`; `refusals` summed "
            "over the edges' reports: counts by reason code over the last hour, the latest refusals "
            "(time, code, field, message, edge node).",
        ),
        Route(
            "post",
            "/v1/projects/{project_id}/overview",
            "projectOverview",
            "Events, visitors and sessions over a range, per hour or day, and the top values",
            {200: Answer("The totals, the zero-filled series and the top lists.", OverviewAnswer)},
            (400, 401, 403, 404, 413, 422, 429, 503),
            OverviewRequest,
            description="Events, page views and visitors (the user id, else the anonymous id) from "
            "`events` by `timestamp` in [from, to); sessions, bounce rate, durations and the top "
            "referrers, channels, countries, browsers and devices from `sessions` by `started_at`; top "
            "pages from page views by path. Bots left out unless `include_bots`. At most 400 days; "
            '`hour` at most 31 (docs/control-api.md, "Overview"). Runs read-only with the limits of '
            "`/query`.",
        ),
    )


def _data_subject_routes() -> tuple[Route, ...]:
    """docs/privacy.md, "Data subjects: deletion and export"."""
    base = "/v1/projects/{project_id}/data-subjects"
    the_person = (
        "The person is the user id and the anonymous ids named, and every anonymous id that appears "
        "on an event with that user id. "
    )
    return (
        Route(
            "post",
            f"{base}/delete",
            "deleteDataSubject",
            "Delete a person's data, now and from every later replay",
            {202: Answer("The deletion job, queued.", DataSubjectJobCreated)},
            (400, 401, 403, 404, 413, 429, 503),
            DataSubjectRequest,
            description=the_person + "A job (follow it at `jobs/{job_id}`) records a tombstone per id, "
            "which the consumers and `headwater replay` honour, then deletes the person's rows from every "
            "table of the project and verifies that none is left (about the project's batching span plus "
            "15 s per pass, two passes at least). Audit-logged with a digest of the ids.",
        ),
        Route(
            "get",
            f"{base}/jobs/{{job_id}}",
            "getDataSubjectJob",
            "A deletion job's state and counts",
            {200: Answer("The job.", DataSubjectJob)},
            (400, 401, 403, 404, 429),
        ),
        Route(
            "post",
            f"{base}/export",
            "exportDataSubject",
            "Every event and session of a person, as JSON lines",
            {
                200: Answer(
                    'One JSON object a line: `{"table": "events"|"sessions", "row": {...}}`; a table '
                    f'past {100_000:,} rows ends with `{{"table": ..., "truncated": true}}`.',
                    {"type": "string"},
                    media_type="application/x-ndjson",
                )
            },
            (400, 401, 403, 404, 413, 422, 429, 503),
            DataSubjectRequest,
            description=the_person + "Streamed; read with the limits of `/query`. Audit-logged with a "
            "digest of the ids.",
        ),
    )


def _import_routes() -> tuple[Route, ...]:
    """docs/import.md, "How imports reach ClickHouse"."""
    base = "/v1/projects/{project_id}/imports"
    return (
        Route(
            "post",
            f"{base}/batches",
            "importBatch",
            "Records of one stream, stored in hw_<project>.import_<stream>",
            {200: Answer("Durable in JetStream: the consumers' import writer stores it.", ImportBatchAnswer)},
            (400, 401, 403, 404, 409, 413, 429, 503),
            ImportBatchRequest,
            description="Each record is checked against its table's columns (a new property of the "
            "schema adds a column; a column keeps its first type): the first that does not fit is "
            "`400 invalid_record` naming it (`records[3].email`). Answered once JetStream acknowledged "
            "the batch; the same `batch_id` sent again is stored once (`duplicate: true`). "
            "`503 imports_unavailable`: nothing was stored, send it again (docs/import.md).",
        ),
        Route(
            "post",
            f"{base}/activate-version",
            "importActivateVersion",
            "Remove the rows of a stream's older table versions (a full-table sync completed)",
            {200: Answer("Durable in JetStream, after the batches sent before it.", ActivateVersionAnswer)},
            (400, 401, 403, 404, 413, 429, 503),
            ActivateVersionRequest,
        ),
        Route(
            "put",
            f"{base}/state",
            "importSaveState",
            "Record the import's last Singer STATE or Airbyte state",
            {200: Answer("Recorded; the listing shows it.", ImportStateAnswer)},
            (400, 401, 403, 404, 413, 429, 503),
            ImportStateRequest,
        ),
        Route(
            "get",
            base,
            "listImports",
            "The project's imported tables with their rows, schema version and columns; the last state",
            {200: Answer("The imported tables.", ImportsListing)},
            (400, 401, 403, 404, 429, 503),
        ),
    )


def _console_page_routes() -> tuple[Route, ...]:
    """The web console (docs/console.md): public static files; its pages call the API with the token."""
    html = Answer(
        "The console's page (its client-side routes all answer it).",
        {"type": "string"},
        media_type="text/html",
    )
    page = {
        "name": "page",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(console.PAGES)},
    }
    routes = [
        Route("get", "/console/", "consolePage", "The web console", {200: html}, public=True),
        Route(
            "get", "/console/{page}", "consoleRoute", "A page of the web console", {200: html}, (404,),
            parameters=(page,), public=True,
        ),
    ]  # fmt: skip
    for name, content_type in console.ASSETS.items():
        media_type = content_type.split(";")[0]
        answer = Answer(
            f"The console's {name}, cached for a year.", {"type": "string"}, media_type=media_type
        )
        operation = "consoleScript" if name.endswith(".js") else "consoleStylesheet"
        routes.append(
            Route(
                "get",
                f"/console/assets/{name}",
                operation,
                f"The console's {name}",
                {200: answer},
                public=True,
            )
        )
    return tuple(routes)


def openapi_document() -> dict[str, Any]:
    table = routes()
    structs = _structs(table)
    refs, components = msgspec.json.schema_components(structs, ref_template=COMPONENTS)
    schema_of = dict(zip(structs, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in table:
        item = paths.setdefault(route.path, {})
        if "{project_id}" in route.path:
            item["parameters"] = [
                {"name": "project_id", "in": "path", "required": True, "schema": _ref("ProjectId")}
            ]
        if "{job_id}" in route.path:
            item["parameters"].append(
                {"name": "job_id", "in": "path", "required": True, "schema": msgspec.json.schema(JobId)}
            )
        if "{funnel_id}" in route.path:
            item["parameters"].append(
                {"name": "funnel_id", "in": "path", "required": True, "schema": msgspec.json.schema(FunnelId)}
            )
        item[route.method] = _operation(route, schema_of)
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "headwater control API",
            "version": "1",
            "description": "Projects, keys and read-only queries. Every error is an `Error` object with "
            "the HTTP status, a machine-readable `code`, a `message` and, when one part of the request is "
            "at fault, its `field`.",
        },
        "security": [{"adminToken": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of the control plane's admin tokens.",
                }
            },
            "schemas": {**_finished(components), "ProjectId": msgspec.json.schema(ProjectId)},
            "responses": {f"Error{status}": _error_response(status) for status in ERROR_CODES},
        },
    }
    # As served: the generated defaults of tuple fields are tuples, which JSON has as arrays.
    as_json: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(document))
    return as_json


def _structs(table: Iterable[Route]) -> tuple[type, ...]:
    """Every struct a route names, each once, in order; and the error body."""
    found: dict[type, None] = {Error: None}
    for route in table:
        bodies = [route.request, *(answer.body for answer in route.answers.values())]
        for body in bodies:
            for struct in body if isinstance(body, tuple) else (body,):
                if isinstance(struct, type):
                    found[struct] = None
    return tuple(found)


def _finished(components: dict[str, Schema]) -> dict[str, Schema]:
    """The generated components with each struct's `json_schema_extra` added and no empty
    `required` lists."""
    extras = {
        name: vars(struct)["json_schema_extra"]
        for module in (schemas, patterns_schemas, subjects_schemas, console_schemas)
        for name, struct in vars(module).items()
        if isinstance(struct, type)
        and issubclass(struct, msgspec.Struct)
        and "json_schema_extra" in vars(struct)
    }
    finished = {}
    for name, schema in components.items():
        schema = {key: value for key, value in schema.items() if value != [] or key != "required"}
        finished[name] = {**schema, **extras.get(name, {})}
    return finished


def _operation(route: Route, schema_of: Mapping[type, Schema]) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary}
    if route.description:
        operation["description"] = route.description
    if route.public:
        operation["security"] = []
    if route.parameters:
        operation["parameters"] = list(route.parameters)
    if route.request is not None:
        operation["requestBody"] = {
            "required": route.request_required,
            "content": _json(schema_of[route.request]),
        }
    responses: dict[str, Any] = {}
    for status, answer in route.answers.items():
        response: dict[str, Any] = {"description": answer.description}
        if answer.headers:
            response["headers"] = dict(answer.headers)
        if answer.body is not None:
            response["content"] = {answer.media_type: {"schema": _body_schema(answer.body, schema_of)}}
        if answer.links:
            response["links"] = _project_links("$response.body#/project/id")
        if answer.funnel_links:
            response["links"] = _funnel_links()
        responses[str(status)] = response
    responses.update(_errors(*route.errors))
    operation["responses"] = responses
    return operation


def _body_schema(body: Body, schema_of: Mapping[type, Schema]) -> Schema:
    assert body is not None
    if isinstance(body, tuple):
        return {"oneOf": [schema_of[struct] for struct in body]}
    if isinstance(body, type):
        return schema_of[body]
    return body


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/Error{status}"} for status in statuses}


def _error_response(status: int) -> dict[str, Any]:
    schema = {
        "allOf": [
            _ref("Error"),
            {"properties": {"status": {"const": status}, "code": {"enum": list(ERROR_CODES[status])}}},
        ]
    }
    return {"description": ERROR_DESCRIPTIONS[status], "content": _json(schema)}


def _project_links(project_id: str) -> dict[str, Any]:
    """Links from an answer that names a project to the operations on it (for clients and for
    stateful testing)."""
    target = {"project_id": project_id}
    return {
        "GetProject": {"operationId": "getProject", "parameters": target},
        "UpdateProject": {"operationId": "updateProject", "parameters": target},
        "RotateKey": {"operationId": "rotateProjectKey", "parameters": target},
        "QueryProject": {"operationId": "queryProject", "parameters": target},
        "QueryFunnel": {"operationId": "queryFunnel", "parameters": target},
        "FunnelTrend": {"operationId": "funnelTrend", "parameters": target},
        "QueryPaths": {"operationId": "queryPaths", "parameters": target},
        "DisableProject": {"operationId": "deleteProject", "parameters": target},
        "PurgeProject": {
            "operationId": "deleteProject",
            "parameters": {**target, "query.purge": "true", "query.confirm": project_id},
        },
    }


def _funnel_links() -> dict[str, Any]:
    """Links from a created saved funnel to the operations on it."""
    target = {"project_id": "$request.path.project_id", "funnel_id": "$response.body#/id"}
    return {
        "GetSavedFunnel": {"operationId": "getSavedFunnel", "parameters": target},
        "ReplaceSavedFunnel": {"operationId": "replaceSavedFunnel", "parameters": target},
        "RunSavedFunnel": {"operationId": "runSavedFunnel", "parameters": target},
        "SavedFunnelTrend": {"operationId": "savedFunnelTrend", "parameters": target},
        "SavedFunnelAnomalies": {"operationId": "savedFunnelAnomalies", "parameters": target},
        "DeleteSavedFunnel": {"operationId": "deleteSavedFunnel", "parameters": target},
    }
