"""Bodies of the data-subject endpoints (docs/control-api.md, "Data subjects"), as msgspec Structs:
the request's validation and the OpenAPI document's schemas (openapi.py)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta, Struct

from headwater.core.service.errors import APIError

Schema = dict[str, Any]

MAX_ID_LENGTH = 200
MAX_ANONYMOUS_IDS = 100
SubjectId = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]
JobState = Literal["queued", "running", "done", "failed"]
JOB_ID_PATTERN = "^[a-z2-7]{16}$"
JobId = Annotated[str, Meta(pattern=JOB_ID_PATTERN, description="The job's id, as `delete` answered it.")]


class DataSubjectRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """A person, by their user id, their anonymous ids, or both."""

    user_id: (
        Annotated[
            SubjectId,
            Meta(
                description="The person's user id. Every anonymous id that appears on an event with "
                "this user id (an `identify`, or any event sent after login) is the person's too."
            ),
        ]
        | None
    ) = None
    anonymous_ids: Annotated[
        tuple[SubjectId, ...],
        Meta(
            max_length=MAX_ANONYMOUS_IDS, description="Anonymous ids of the person (a browser's, a device's)."
        ),
    ] = ()

    json_schema_extra: ClassVar[Schema] = {
        "anyOf": [
            {"required": ["user_id"], "properties": {"user_id": {"type": "string"}}},
            {"required": ["anonymous_ids"], "properties": {"anonymous_ids": {"minItems": 1}}},
        ],
        "examples": [{"user_id": "user-42", "anonymous_ids": ["0c1f2a8e-4d1b-4f7c-9d0e-6b7a1c2d3e4f"]}],
    }

    def __post_init__(self) -> None:
        if self.user_id is None and not self.anonymous_ids:
            raise APIError(
                400, "invalid_field", "user_id is required unless anonymous_ids names someone", "user_id"
            )


class DataSubjectJobCreated(Struct, frozen=True):
    job_id: JobId


class DataSubjectJob(Struct, frozen=True):
    """A deletion job's progress (docs/privacy.md, "Data subjects")."""

    job_id: JobId
    project: str
    state: Annotated[
        JobState,
        Meta(description="queued → running → done (verified: no row of the person left) or failed."),
    ]
    subject: Annotated[
        str, Meta(description="A SHA-256 digest of the request's ids (the ids are not kept in clear).")
    ]
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    tombstones: Annotated[int, Meta(description="Identities recorded as tombstones.")]
    linked_anonymous_ids: Annotated[
        int, Meta(description="Anonymous ids found on the user id's events, beside those named.")
    ]
    rows_deleted: Annotated[dict[str, int], Meta(description="Per table, the rows deleted.")]
    passes: Annotated[int, Meta(description="Deletion passes run (a last one verifies that none is left).")]
