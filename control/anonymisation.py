"""`POST /v1/projects/{id}/anonymisation/preview`: what the consumers would store for a sample event
under the project's anonymisation rules (or the `rules` given to try instead), and which rule
changed which field. Stores nothing (docs/control-api.md).

The rows are built by the consumers' own code (consumers/preview.py), handed to the control app
by ops as an `EventPreviewer`: the preview cannot differ from what a consumer stores.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

import msgspec
from msgspec import Meta, Struct

from headwater.core.projects.project import validate_project_id
from headwater.core.projects.settings import ProjectSettings
from headwater.core.service.errors import APIError
from headwater.core.service.validation import convert_body
from headwater.privacy.rules import MAX_RULES, Rule, rule_problem

from .service import ProjectService
from .store import ProjectStore


class EventPreviewer(Protocol):
    def __call__(
        self,
        project_id: str,
        event: dict[str, Any],
        settings: ProjectSettings,
        hash_key: bytes | None,
        client: tuple[str | None, str | None] = (None, None),
    ) -> dict[str, Any]:
        """`{"stored": {column: value}, "changes": [...]}` for `event` sent from `client` (address,
        user agent); ValueError for an event that cannot be stored."""
        ...


class PreviewRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """A sample event, and optionally rules to try instead of the project's saved ones."""

    event: Annotated[
        dict[str, Any],
        Meta(
            description=(
                "A Segment event as a client sends it (`type` defaults to track), e.g. "
                '{"userId": "u1", "properties": {"email": "a@example.com"}}.'
            )
        ),
    ]
    rules: (
        Annotated[
            tuple[Rule, ...],
            Meta(
                max_length=MAX_RULES,
                description="Rules to try instead of the saved ones (not saved); absent: the saved ones.",
            ),
        ]
        | None
    ) = None
    ip: (
        Annotated[
            str,
            Meta(
                max_length=100,
                description="The client address the edge would record (the `ip` setting applies to it).",
            ),
        ]
        | None
    ) = None
    user_agent: Annotated[str, Meta(max_length=2000, description="The request's User-Agent.")] | None = None


class PreviewChange(Struct, frozen=True):
    rule: Annotated[int, Meta(description="The rule's place in the list (from 0).")]
    path: Annotated[str, Meta(description="The field it changed, e.g. `properties.email`, `traits.phone`.")]
    action: Annotated[str, Meta(description="What it did: drop, mask, truncate, hash or redact.")]


class PreviewAnswer(Struct, frozen=True):
    stored: Annotated[
        dict[str, Any],
        Meta(
            description=(
                "The event's stored columns as a consumer would write them: ids, properties, traits "
                "and context (as objects), ip, the page and campaign columns."
            )
        ),
    ]
    changes: tuple[PreviewChange, ...]


async def preview(
    store: ProjectStore,
    service: ProjectService,
    previewer: EventPreviewer,
    project_id: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    """The preview's answer; 400 naming the field at fault, 404 for an unknown project."""
    project, _ = await store.get(validate_project_id(project_id))
    request = convert_body(body, PreviewRequest)
    settings = project.settings
    if request.rules is not None:
        settings = msgspec.structs.replace(
            settings,
            anonymisation=msgspec.structs.replace(settings.anonymisation, rules=_checked(request.rules)),
        )
    hash_key = project.anonymisation_key
    if hash_key is None and any(rule.action == "hash" for rule in settings.anonymisation.rules):
        _, hash_key = await service.anonymisation_key(project_id)  # a project older than its key
    try:
        return previewer(project_id, request.event, settings, hash_key, (request.ip, request.user_agent))
    except (ValueError, TypeError) as exc:
        raise APIError(400, "invalid_event", f"event cannot be stored: {exc}", "event") from None


def _checked(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    for index, rule in enumerate(rules):
        problem = rule_problem(rule)
        if problem is not None:
            field = f"rules[{index}].{problem.field}"
            raise APIError(400, "invalid_field", f"{field}: {problem.message}", field)
    return rules
