"""`headwater projects …` as an operator runs it: a subprocess talking HTTP to a control plane.

The control plane runs in this process, on the test's event loop, so every command is awaited as
an asyncio subprocess: the loop keeps serving the requests the command makes.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from hw_testing import ADMIN_TOKEN, Run, admin_headers, cli_env, run_cli

from headwater.ops.runtime import Stack

pytestmark = pytest.mark.services


@pytest.fixture
async def control(make_stack) -> Stack:  # type: ignore[no-untyped-def]
    return await make_stack(control=True)


async def headwater(
    control_url: str | None, *args: str, token: str = ADMIN_TOKEN, cwd: Path | None = None
) -> Run:
    """`headwater ARGS --control-url URL` with HEADWATER_ADMIN_TOKEN set and no other HEADWATER_*."""
    env = cli_env()
    env["HEADWATER_ADMIN_TOKEN"] = token
    url_args = ("--control-url", control_url) if control_url else ()
    return await run_cli(*args, *url_args, env=env, cwd=cwd)


def url(stack: Stack) -> str:
    assert stack.control_url is not None
    return stack.control_url


async def test_create_shows_the_secret_once_and_show_reads_it_back(control: Stack, project_id: str) -> None:
    created = await headwater(
        url(control),
        "projects", "create", project_id, "--name", "Shop",
        "--origin", "https://Shop.Example.com", "--origin", "https://*.example.org",
        "--settings", '{"batching": {"span_seconds": 2}}',
    )  # fmt: skip
    assert created.code == 0, created.stderr
    assert "SECRET KEY (shown once" in created.stdout
    secret = next(line.strip() for line in created.stdout.splitlines() if line.strip().startswith("hwsk_"))
    assert "public key (for browsers and apps): hwpk_" in created.stdout
    assert "https://shop.example.com" in created.stdout

    shown = await headwater(url(control), "projects", "show", project_id)
    assert shown.code == 0, shown.stderr
    assert "name              Shop" in shown.stdout
    assert "batching.span_seconds = 2.0" in shown.stdout
    assert secret not in shown.stdout and secret[:9] in shown.stdout  # only the hint

    as_json = (await headwater(url(control), "projects", "show", project_id, "--json")).json()
    assert as_json["project"]["allowed_origins"] == ["https://shop.example.com", "https://*.example.org"]
    assert as_json["revision"] >= 1

    # --json gives the API's answer as it is, the secret key included.
    other = f"{project_id}_j"
    body = (await headwater(url(control), "projects", "create", other, "--json")).json()
    assert body["project"]["id"] == other and body["secret_key"].startswith("hwsk_")


async def test_create_with_an_idempotency_key_replays_the_first_answer(
    control: Stack, project_id: str
) -> None:
    args = ("projects", "create", project_id, "--idempotency-key", f"key-{project_id}")
    first = await headwater(url(control), *args, "--json")
    again = await headwater(url(control), *args)
    assert again.code == 0, again.stderr
    assert "(replayed: same Idempotency-Key)" in again.stdout
    assert first.json()["secret_key"] in again.stdout


async def test_list_follows_pages_or_shows_one(
    control: Stack, project_id: str, http: httpx.AsyncClient
) -> None:
    ids = [f"{project_id}_{n}" for n in range(5)]
    for new_id in ids:
        response = await http.post(
            f"{url(control)}/v1/projects", json={"id": new_id}, headers=admin_headers()
        )
        assert response.status_code == 201, response.text

    everything = (await headwater(url(control), "projects", "list", "--page-size", "2", "--json")).json()
    assert [p["id"] for p in everything["projects"]] == ids
    assert everything["next_after"] is None

    first = await headwater(url(control), "projects", "list", "--limit", "2")
    assert first.code == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "ENABLED", "ORIGINS", "CREATED"]
    assert [line.split()[0] for line in lines[1:3]] == ids[:2]
    assert f"more projects follow: list --after {ids[1]}" in first.stdout

    second = await headwater(url(control), "projects", "list", "--limit", "2", "--after", ids[1], "--json")
    assert [p["id"] for p in second.json()["projects"]] == ids[2:4]
    assert second.json()["next_after"] == ids[3]

    rest = await headwater(url(control), "projects", "list", "--after", ids[3])
    assert [line.split()[0] for line in rest.stdout.splitlines()[1:]] == ids[4:]


async def test_update_replaces_origins_merges_settings_and_checks_the_revision(
    control: Stack, project_id: str
) -> None:
    created = await headwater(
        url(control),
        "projects", "create", project_id, "--origin", "https://a.example.com",
        "--settings", '{"rate_limits": {"burst_seconds": 5}}', "--json",
    )  # fmt: skip
    revision = created.json()["revision"]

    updated = await headwater(
        url(control),
        "projects", "update", project_id, "--name", "Renamed", "--origin", "https://b.example.com",
        "--settings", '{"batching": {"span_seconds": 3}}', "--if-match", str(revision), "--json",
    )  # fmt: skip
    project = updated.json()["project"]
    assert project["name"] == "Renamed"
    assert project["allowed_origins"] == ["https://b.example.com"]
    assert project["settings"]["rate_limits"]["burst_seconds"] == 5.0  # kept: settings merge
    assert project["settings"]["batching"]["span_seconds"] == 3.0

    stale = await headwater(
        url(control), "projects", "update", project_id, "--disable", "--if-match", str(revision)
    )
    assert stale.code == 1
    assert "revision_mismatch, HTTP 412" in stale.stderr, stale.stderr
    assert f"changed since revision {revision}" in stale.stderr
    assert f"headwater projects show {project_id}" in stale.stderr

    disabled = await headwater(url(control), "projects", "update", project_id, "--disable", "--clear-origins")
    assert disabled.code == 0, disabled.stderr
    assert "enabled           no" in disabled.stdout
    assert "allowed origins   -" in disabled.stdout

    bad_setting = await headwater(
        url(control), "projects", "update", project_id, "--settings", '{"batching": {"span_seconds": 999}}'
    )
    assert bad_setting.code == 1
    assert "settings.batching.span_seconds must be a number" in bad_setting.stderr, bad_setting.stderr
    assert "invalid_field, HTTP 400" in bad_setting.stderr

    not_json = await headwater(url(control), "projects", "update", project_id, "--settings", "[1]")
    assert not_json.code == 2 and "must be a JSON object" in not_json.stderr
    nothing = await headwater(url(control), "projects", "update", project_id)
    assert nothing.code == 2 and "nothing to update" in nothing.stderr


async def test_rotate_key_shows_the_new_secret_once(control: Stack, project_id: str) -> None:
    old = (await headwater(url(control), "projects", "create", project_id, "--json")).json()
    rotated = await headwater(
        url(control), "projects", "rotate-key", project_id, "--kind", "secret", "--grace-seconds", "60"
    )
    assert rotated.code == 0, rotated.stderr
    assert "NEW SECRET KEY (shown once" in rotated.stdout
    new_secret = next(
        line.strip() for line in rotated.stdout.splitlines() if line.strip().startswith("hwsk_")
    )
    assert new_secret != old["secret_key"]
    assert "previous secret keys expire at" in rotated.stdout

    project = (await headwater(url(control), "projects", "show", project_id, "--json")).json()["project"]
    secret_keys = {k["hint"]: k for k in project["secret_keys"]}
    assert secret_keys[old["secret_key"][:9]]["expires_at"] is not None
    assert secret_keys[new_secret[:9]]["expires_at"] is None

    public = (
        await headwater(url(control), "projects", "rotate-key", project_id, "--kind", "public", "--json")
    ).json()
    assert public["kind"] == "public"
    assert public["key"] in [k["key"] for k in public["project"]["public_keys"]]


async def test_delete_disables_and_purge_needs_the_id_again(control: Stack, project_id: str) -> None:
    await headwater(url(control), "projects", "create", project_id, "--json")

    disabled = await headwater(url(control), "projects", "delete", project_id)
    assert disabled.code == 0, disabled.stderr
    assert "disabled project" in disabled.stdout
    shown = (await headwater(url(control), "projects", "show", project_id, "--json")).json()
    assert shown["project"]["enabled"] is False

    unconfirmed = await headwater(url(control), "projects", "delete", project_id, "--purge")
    assert unconfirmed.code == 2 and f"--confirm {project_id}" in unconfirmed.stderr
    mistyped = await headwater(
        url(control), "projects", "delete", project_id, "--purge", "--confirm", "other"
    )
    assert mistyped.code == 2

    purged = await headwater(
        url(control), "projects", "delete", project_id, "--purge", "--confirm", project_id
    )
    assert purged.code == 0, purged.stderr
    assert f"database hw_{project_id} dropped" in purged.stdout
    gone = await headwater(url(control), "projects", "show", project_id)
    assert gone.code == 1 and "project_not_found, HTTP 404" in gone.stderr
    assert control.clickhouse is not None
    assert not control.clickhouse.command(f"EXISTS DATABASE hw_{project_id}")


async def test_errors_are_readable(control: Stack, project_id: str, tmp_path: Path) -> None:
    wrong = await headwater(url(control), "projects", "list", token="not-the-admin-token-at-all")
    assert wrong.code == 1
    assert "invalid_admin_token" in wrong.stderr and "HTTP 403" in wrong.stderr
    assert "not-the-admin-token" not in wrong.stderr

    bad_origin = await headwater(
        url(control), "projects", "create", project_id, "--origin", "ftp://x.example.com"
    )
    assert bad_origin.code == 1
    assert "allowed_origins[0]:" in bad_origin.stderr, bad_origin.stderr

    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    unreachable = await headwater(f"http://127.0.0.1:{closed_port}", "projects", "list")
    assert unreachable.code == 1
    assert f"cannot reach the control API at http://127.0.0.1:{closed_port}" in unreachable.stderr

    no_stack = await headwater(None, "projects", "list", "--data-dir", str(tmp_path / "none"))
    assert no_stack.code == 1 and "no running stack found" in no_stack.stderr
