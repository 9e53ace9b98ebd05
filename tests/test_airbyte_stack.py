"""The Airbyte destination against a running headwater: `check` with good and bad configs through
the control API (the command a subprocess, the control plane on the test's event loop)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hw_testing import ADMIN_TOKEN, admin_headers, create_project, eventually, run_cli

from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services


@pytest.fixture
async def control(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    return await make_stack(control=True)


async def check(tmp_path: Path, **config: Any) -> dict[str, Any]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    run = await run_cli("import", "airbyte", "check", "--config", str(path))
    assert run.code == 0 and run.stderr == "", run.stderr
    [message] = [json.loads(line) for line in run.stdout.splitlines()]
    assert message["type"] == "CONNECTION_STATUS"
    return dict(message["connectionStatus"])


async def test_check_succeeds_with_a_good_config_and_says_why_a_bad_one_fails(
    control: Stack, http: httpx.AsyncClient, project_id: str, tmp_path: Path
) -> None:
    await create_project(http, control, project_id)
    url = control.control_url
    good = {"control_url": url, "token": ADMIN_TOKEN, "project": project_id}
    assert (await check(tmp_path, **good))["status"] == "SUCCEEDED"

    bad_token = await check(tmp_path, **{**good, "token": "not-the-token"})
    assert (
        bad_token["status"] == "FAILED" and "refused the token (invalid_admin_token)" in bad_token["message"]
    )

    unknown = await check(tmp_path, **{**good, "project": "nobody_here"})
    assert unknown["status"] == "FAILED" and "project 'nobody_here' does not exist" in unknown["message"]

    not_headwater = await check(tmp_path, **{**good, "control_url": f"{url}/nowhere"})
    assert not_headwater["status"] == "FAILED" and "HTTP 404" in not_headwater["message"]

    response = await http.patch(
        f"{url}/v1/projects/{project_id}", json={"enabled": False}, headers=admin_headers()
    )
    assert response.status_code == 200, response.text
    disabled = await check(tmp_path, **good)
    assert disabled["status"] == "FAILED" and "disabled" in disabled["message"]


def overwrite_catalog() -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "plan": {"type": ["null", "string"]}},
    }
    return {
        "streams": [
            {
                "stream": {"name": "orgs", "json_schema": schema, "supported_sync_modes": ["full_refresh"]},
                "sync_mode": "full_refresh",
                "destination_sync_mode": "overwrite",
            }
        ]
    }


def messages(*records: dict[str, Any], status: str | None = None) -> str:
    lines = [{"type": "RECORD", "record": {"stream": "orgs", "data": r, "emitted_at": 1}} for r in records]
    lines.append(
        {"type": "STATE", "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": "orgs"}}}}
    )
    if status:
        descriptor = {"stream_descriptor": {"name": "orgs"}, "status": status}
        lines.append(
            {
                "type": "TRACE",
                "trace": {"type": "STREAM_STATUS", "emitted_at": 1.0, "stream_status": descriptor},
            }
        )
    return "".join(json.dumps(line) + "\n" for line in lines)


async def test_write_overwrites_a_complete_stream_only_and_reports_a_refused_record(
    make_stack,
    http: httpx.AsyncClient,
    project_id: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    stack = await make_stack(control=True, consumer=True)
    await create_project(http, stack, project_id)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"control_url": stack.control_url, "token": ADMIN_TOKEN, "project": project_id})
    )
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(overwrite_catalog()))
    args = ("import", "airbyte", "write", "--config", str(config), "--catalog", str(catalog))

    async def ids() -> list[int] | str:
        response = await http.post(
            f"{stack.control_url}/v1/projects/{project_id}/query",
            json={"sql": "SELECT id FROM import_orgs ORDER BY id"},
            headers=admin_headers(),
        )
        return [row[0] for row in response.json()["rows"]] if response.status_code == 200 else response.text

    first = await run_cli(*args, stdin=messages({"id": 1}, {"id": 2}, status="COMPLETE"))
    assert first.code == 0, first.stdout + first.stderr
    await eventually(ids, lambda found: found == [1, 2], timeout=30)

    # An incomplete sync leaves the earlier rows beside its own; a complete one replaces them all.
    incomplete = await run_cli(*args, stdin=messages({"id": 3}, status="INCOMPLETE"))
    assert incomplete.code == 0, incomplete.stdout + incomplete.stderr
    await eventually(ids, lambda found: found == [1, 2, 3], timeout=30)
    complete = await run_cli(*args, stdin=messages({"id": 4}, status="COMPLETE"))
    assert complete.code == 0, complete.stdout + complete.stderr
    await eventually(ids, lambda found: found == [4], timeout=30)

    refused = await run_cli(*args, stdin=messages({"id": "not a number"}, status="COMPLETE"))
    printed = [json.loads(line) for line in refused.stdout.splitlines()]
    assert refused.code == 1 and "STATE" not in [m["type"] for m in printed]
    error = printed[-1]["trace"]["error"]
    assert error["failure_type"] == "system_error"
    assert error["message"].startswith("the control plane refused the import: 400 invalid_record")
    assert error["message"].endswith("(field records[0].id)")
    assert await ids() == [4]  # nothing of the refused sync was activated
