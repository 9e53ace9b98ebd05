"""The Airbyte destination against a running headwater: `check` with good and bad configs through
the control API (the command a subprocess, the control plane on the test's event loop)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hw_testing import ADMIN_TOKEN, admin_headers, create_project, run_cli

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
