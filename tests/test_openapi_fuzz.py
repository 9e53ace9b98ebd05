"""Property-based fuzzing of the live control API from its own OpenAPI document (schemathesis).

Each operation gets a fresh control plane (real nats-server, embedded ClickHouse), holding the
project `SEEDED_PROJECT` unless the operation creates projects, and is sent, in this order:

- schema-valid cases that the server must accept (`ACCEPTED`), so the document is not looser than
  the server;
- the coverage cases schemathesis derives from the document (boundary values, missing and
  mistyped parameters and properties), positive and negative;
- Hypothesis-generated cases, positive and negative, and the document's examples, with
  `project_id` generated (almost always unknown: 400/404), then pinned to the seeded project so
  the success answers are checked too.

A stateful run follows the document's links (create → read, change, rotate keys, query, disable,
purge), and undocumented methods must get 405. Every answer must pass the checks in `CHECKS`;
negative cases must be refused, so the document is not stricter than the server either.
Generation is derandomized, so a failure reproduces; its report gives a curl command.

The server runs on the test's event loop; schemathesis is synchronous, so it runs in a worker
thread (`asyncio.to_thread`) while the loop keeps serving.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hw_testing import ADMIN_TOKEN, admin_headers
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from headwater.control.openapi import openapi_document
from headwater.control.settings import AdminToken, ControlSettings
from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services

MAX_EXAMPLES = 40  # Hypothesis examples per operation and per kind of project id (generated, pinned)
# Schema-valid only; more, since it takes boundary values to find a gap. Fewer for creating a
# project, which creates its ClickHouse database (~0.1 s).
ACCEPTANCE_EXAMPLES = {"POST /v1/projects": 30}
DEFAULT_ACCEPTANCE_EXAMPLES = 100
STATEFUL_SCENARIOS = 10
STATEFUL_STEPS = 20
# The document's example id, so that the coverage cases, which use it, reach an existing project.
SEEDED_PROJECT = "shop"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

CHECKS = [
    not_a_server_error,
    status_code_conformance,  # every status is documented for the operation
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,  # ETag, Idempotent-Replayed
    negative_data_rejection,  # what the document forbids is refused (4xx)
    missing_required_header,
    ignored_auth,  # a /v1 answer re-sent without the admin token, or with a wrong one, is refused
]


def _lacks_body_field(case: Case, name: str) -> bool:
    return not (isinstance(case.body, dict) and name in case.body)


def _lacks_header(case: Case, name: str) -> bool:
    return name.lower() not in {key.lower() for key in case.headers or {}}


def _any(case: Case) -> bool:
    return True


def _lacks_anonymisation_rules(case: Case) -> bool:
    """Anonymisation rules are refused past their schema when an action lacks what it needs (a
    redact rule without detectors, a pattern RE2 cannot compile): docs/privacy.md."""
    settings = case.body.get("settings") if isinstance(case.body, dict) else None
    group = settings.get("anonymisation") if isinstance(settings, dict) else None
    return not (isinstance(group, dict) and group.get("rules"))


def _with_fixed(case: Case, fixed: dict[str, Any]) -> Case:
    """`case` with the fixed path parameters (a document example names no existing funnel)."""
    case.path_parameters = {**(case.path_parameters or {}), **fixed.get("path_parameters", {})}
    return case


# Schema-valid requests the server must accept (2xx; 404 or 409 for an unknown or a taken id), per
# operation. The exclusions are the server's refusals of schema-valid requests, by design: origins
# that do not parse as URLs, an Idempotency-Key reused with another body, an If-Match revision that
# is not current, a purge without the right `confirm`, SQL that ClickHouse refuses, anonymisation
# rules whose options do not fit their action.
ACCEPTED: dict[str, Callable[[Case], bool]] = {
    "GET /healthz": _any,
    "GET /readyz": _any,
    "GET /v1/openapi.json": _any,
    "GET /v1/projects": _any,
    "GET /v1/projects/{project_id}": _any,
    "POST /v1/projects/{project_id}/keys/rotate": _any,
    "POST /v1/projects": lambda case: (
        _lacks_body_field(case, "allowed_origins")
        and _lacks_header(case, "Idempotency-Key")
        and _lacks_anonymisation_rules(case)
    ),
    "PATCH /v1/projects/{project_id}": lambda case: (
        _lacks_body_field(case, "allowed_origins")
        and _lacks_header(case, "If-Match")
        and _lacks_anonymisation_rules(case)
    ),
    "DELETE /v1/projects/{project_id}": lambda case: str((case.query or {}).get("purge")).lower() != "true",
}
# Not run in the stateful test: `use_after_free` expects a DELETE to make the resource vanish, but
# DELETE without `purge=true` disables the project and keeps it readable, as documented.
STATEFUL_CHECKS = [*CHECKS, ensure_resource_availability]

DOCUMENT = openapi_document()
OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, item in DOCUMENT["paths"].items()
    for method in item
    if method in HTTP_METHODS
)

_FAILURE_TYPES: dict[tuple[str, ...], type[AssertionError]] = {}


def check_failure(group: FailureGroup) -> AssertionError:
    """Schemathesis reports failed checks as a BaseExceptionGroup, which Hypothesis does not catch.
    As an AssertionError named after the failed checks, Hypothesis shrinks it and tells distinct
    failures apart."""
    kinds = tuple(sorted({type(failure).__name__ for failure in group.exceptions}))
    kind = _FAILURE_TYPES.setdefault(kinds, type("_".join(kinds), (AssertionError,), {}))
    return kind(str(group))


def brief(report: str) -> str:
    """The failed checks (title and first line) and the curl command of a schemathesis report."""
    lines = [line.strip() for line in report.splitlines() if line.strip()]
    kept = [
        line
        for index, line in enumerate(lines)
        if line.startswith(("- ST", "curl ")) or (index and lines[index - 1].startswith("- ST"))
    ]
    return " | ".join(kept) or report


def load_schema(control_url: str) -> schemathesis.BaseSchema:
    """The document as the live server serves it, set up to send the admin token."""
    config = schemathesis.Config.from_dict(
        {
            "base-url": control_url,
            "headers": admin_headers(),
            "seed": 20261128,
            "generation": {"deterministic": True, "max-examples": MAX_EXAMPLES},
            # A refused precondition (412) or an oversized body (413) is a rejection too.
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": ["400", "401", "403", "404", "405", "409", "412", "413", "422"]
                }
            },
        }
    )
    return schemathesis.openapi.from_url(
        f"{control_url}/v1/openapi.json", config=config, headers=admin_headers(), timeout=10
    )


def operation_of(schema: schemathesis.BaseSchema, label: str) -> APIOperation:
    operation = schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the served document"
    return operation


class Fuzzer:
    """Sends the cases of one operation; collects every failure rather than stopping at the first."""

    def __init__(self, schema: schemathesis.BaseSchema, label: str) -> None:
        self.schema = schema
        self.label = label
        self.operation = operation_of(schema, label)
        self.session = requests.Session()
        self.statuses: Counter[int] = Counter()  # of requests with the documented method
        self.failures: list[str] = []

    def send(self, case: Case, checks: list[Any] | None = None) -> None:
        try:
            response = case.call_and_validate(
                session=self.session, headers=admin_headers(), checks=checks or CHECKS, timeout=30
            )
        except FailureGroup as failures:
            raise check_failure(failures) from None
        if case.method.upper() == self.operation.method.upper():
            self.statuses[response.status_code] += 1

    def coverage_cases(self) -> list[Case]:
        generation = self.schema.config.generation_for(operation=self.operation, phase="coverage")
        return list(
            self.schema.iter_coverage_cases(
                self.operation, generation_modes=list(GenerationMode), generation_config=generation
            )
        )

    def coverage(self, accepted: Callable[[Case], bool] | None) -> None:
        """The coverage cases with the documented method (the others are for `undocumented_methods`)."""
        for case in self.coverage_cases():
            if case.method.upper() != self.operation.method.upper():
                continue
            checks = [*CHECKS, positive_data_acceptance] if accepted and accepted(case) else None
            try:
                self.send(case, checks)
            except AssertionError as failure:
                self.failures.append(f"coverage: {failure}")

    def undocumented_methods(self) -> None:
        for case in self.coverage_cases():
            if case.method.upper() == self.operation.method.upper():
                continue
            try:
                self.send(case, [not_a_server_error, unsupported_method, allow_header_conformance])
            except AssertionError as failure:
                self.failures.append(brief(str(failure)))

    def fuzz(self, **fixed: Any) -> None:
        """Positive and negative cases, and the document's examples (with the fixed parts in them:
        a body valid only in a narrow band, such as a range of days with settings that go together,
        is rarely generated at random)."""
        strategies = [self.operation.as_strategy(generation_mode=mode, **fixed) for mode in GenerationMode]
        strategies += [
            examples.map(lambda case: _with_fixed(case, fixed))
            for examples in self.operation.get_strategies_from_examples()
        ]
        self._run(st.one_of(strategies), CHECKS, f"fuzzing {fixed or ''}")

    def fuzz_acceptance(self, accepted: Callable[[Case], bool], **fixed: Any) -> None:
        """Schema-valid cases that the server must accept: the document is not looser than the server."""
        strategy = self.operation.as_strategy(generation_mode=GenerationMode.POSITIVE, **fixed)
        self._run(
            strategy.filter(accepted),
            [*CHECKS, positive_data_acceptance],
            "acceptance",
            ACCEPTANCE_EXAMPLES.get(self.label, DEFAULT_ACCEPTANCE_EXAMPLES),
        )

    def _run(
        self, strategy: st.SearchStrategy[Case], checks: list[Any], what: str, examples: int = MAX_EXAMPLES
    ) -> None:
        @hypothesis.settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=True,
        )
        @hypothesis.given(case=strategy)
        def run(case: Case) -> None:
            self.send(case, checks)

        try:
            run()
        except (AssertionError, ExceptionGroup) as failure:
            self.failures.append(f"{what}: {failure}")

    def close(self) -> None:
        self.session.close()


async def seed(stack: Stack, http: httpx.AsyncClient) -> None:
    created = await http.post(
        f"{stack.control_url}/v1/projects",
        json={"id": SEEDED_PROJECT, "allowed_origins": ["https://shop.example.com"]},
        headers=admin_headers(),
    )
    assert created.status_code == 201, created.text


async def seed_funnel(stack: Stack, http: httpx.AsyncClient) -> str:
    """The id of a saved funnel of `SEEDED_PROJECT`, from the document's example."""
    example = DOCUMENT["components"]["schemas"]["SavedFunnelRequest"]["examples"][0]
    created = await http.post(
        f"{stack.control_url}/v1/projects/{SEEDED_PROJECT}/funnels", json=example, headers=admin_headers()
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def seed_job(stack: Stack, http: httpx.AsyncClient) -> str:
    """The id of a data-subject deletion job of `SEEDED_PROJECT`."""
    created = await http.post(
        f"{stack.control_url}/v1/projects/{SEEDED_PROJECT}/data-subjects/delete",
        json={"anonymous_ids": ["someone"]},
        headers=admin_headers(),
    )
    assert created.status_code == 202, created.text
    return str(created.json()["job_id"])


@pytest.fixture
async def control(make_stack, http: httpx.AsyncClient, clickhouse_url: str) -> Stack:  # type: ignore[no-untyped-def]
    """A control plane with no project."""
    # The fuzzer sends many wrong tokens on purpose: never slow it down (tests/test_auth_failures.py
    # covers the slow-down).
    settings = ControlSettings(
        clickhouse_url=clickhouse_url,
        admin_tokens=(AdminToken("tests", ADMIN_TOKEN),),
        port=0,
        auth_failures_burst=1_000_000,
    )
    stack: Stack = await make_stack(control=settings)
    return stack


@pytest.fixture
async def seeded(control: Stack, http: httpx.AsyncClient) -> Stack:
    """A control plane holding `SEEDED_PROJECT`."""
    await seed(control, http)
    return control


async def test_the_served_document_is_the_module_s(control: Stack, http: httpx.AsyncClient) -> None:
    served = await http.get(f"{control.control_url}/v1/openapi.json", headers=admin_headers())
    assert served.status_code == 200
    assert served.json() == DOCUMENT
    assert DOCUMENT["openapi"] == "3.1.0"


@pytest.mark.parametrize("label", OPERATIONS)
async def test_operation_conforms_to_the_document(
    control: Stack, http: httpx.AsyncClient, label: str
) -> None:
    assert control.control_url is not None
    # Creating the document's example id when it exists is a 409 after a 0.2 s wait (for a
    # concurrent retry with the same Idempotency-Key); the create cases need no project.
    if label != "POST /v1/projects":
        await seed(control, http)
    fuzzer = Fuzzer(await asyncio.to_thread(load_schema, control.control_url), label)
    pinned = {"path_parameters": {"project_id": SEEDED_PROJECT}} if "{project_id}" in label else {}
    if "{funnel_id}" in label:  # a saved funnel of the seeded project, so that some cases find it
        pinned["path_parameters"]["funnel_id"] = await seed_funnel(control, http)
    if "{job_id}" in label:  # a deletion job of the seeded project, likewise
        pinned["path_parameters"]["job_id"] = await seed_job(control, http)
    try:
        # First, while the seeded project is as created (later cases may store `*` as an origin,
        # after which `allow_any_origin: false` is refused).
        if label in ACCEPTED:
            await asyncio.to_thread(lambda: fuzzer.fuzz_acceptance(ACCEPTED[label], **pinned))
        await asyncio.to_thread(lambda: fuzzer.coverage(ACCEPTED.get(label)))
        await asyncio.to_thread(fuzzer.fuzz)
        if pinned:
            await asyncio.to_thread(lambda: fuzzer.fuzz(**pinned))
    finally:
        fuzzer.close()
    assert not fuzzer.failures, "\n\n".join(fuzzer.failures)
    # The cases reached the answers whose schemas matter most, not only the refusals.
    assert any(200 <= status < 300 for status in fuzzer.statuses), fuzzer.statuses


async def test_undocumented_methods_are_refused_with_405(seeded: Stack) -> None:
    """RFC 9110: a 405 names the allowed methods in an `Allow` header; so does the answer to
    OPTIONS, and they are the documented ones."""
    assert seeded.control_url is not None
    schema = await asyncio.to_thread(load_schema, seeded.control_url)
    failures: list[str] = []
    for label in OPERATIONS:
        fuzzer = Fuzzer(schema, label)
        try:
            await asyncio.to_thread(fuzzer.undocumented_methods)
        finally:
            fuzzer.close()
        failures += fuzzer.failures
    assert not failures, "\n\n".join(failures)


async def test_stateful_workflows_conform_to_the_document(seeded: Stack) -> None:
    assert seeded.control_url is not None
    schema = await asyncio.to_thread(load_schema, seeded.control_url)

    class Workflows(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"headers": admin_headers()}

        def validate_response(self, response: Any, case: Case, *_: Any, **kwargs: Any) -> None:
            try:
                case.validate_response(
                    response,
                    checks=STATEFUL_CHECKS,
                    headers=admin_headers(),
                    transport_kwargs=kwargs or None,
                    recorder=self.recorder,
                )
            except FailureGroup as failures:
                raise check_failure(failures) from None

    settings = hypothesis.settings(
        max_examples=STATEFUL_SCENARIOS,
        stateful_step_count=STATEFUL_STEPS,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    await asyncio.to_thread(lambda: Workflows.run(settings=settings))


# Requests that the generators above do not produce but that a reading of the server code suggested;
# each must get a documented answer like any generated case.
EDGE_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    # str.isdigit() is true for "²" (a Latin-1 byte in a header), int() refuses it.
    "limit-superscript-digit": ("GET /v1/projects", {"query": {"limit": "²"}}),
    "limit-over-4300-digits": ("GET /v1/projects", {"query": {"limit": "1" * 4400}}),
    "if-match-superscript-digit": (
        "PATCH /v1/projects/{project_id}",
        {"path_parameters": {"project_id": SEEDED_PROJECT}, "headers": {"If-Match": '"²"'}, "body": {}},
    ),
    # Read-only queries whose results are not JSON-serialisable as they are.
    "query-map-with-integer-keys": (
        "POST /v1/projects/{project_id}/query",
        {"path_parameters": {"project_id": SEEDED_PROJECT}, "body": {"sql": "SELECT map(1, 2)"}},
    ),
    "query-128-bit-integer": (
        "POST /v1/projects/{project_id}/query",
        {
            "path_parameters": {"project_id": SEEDED_PROJECT},
            "body": {"sql": "SELECT toUInt128('18446744073709551616')"},
        },
    ),
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
async def test_edge_case_gets_a_documented_answer(seeded: Stack, name: str) -> None:
    assert seeded.control_url is not None
    label, parts = EDGE_CASES[name]
    fuzzer = Fuzzer(await asyncio.to_thread(load_schema, seeded.control_url), label)
    try:
        await asyncio.to_thread(lambda: fuzzer.send(fuzzer.operation.Case(**parts)))
    finally:
        fuzzer.close()
