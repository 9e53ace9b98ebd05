"""PyPI's airbyte-source-faker piped into the destination: real Airbyte messages (stream states,
statuses, logs, estimates) through the protocol logic with an in-memory loader, then through
`headwater import airbyte write` into a running headwater (real NATS, embedded ClickHouse). Faker
runs in a virtualenv of its own, built once per test session (~90 s: marked slow)."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StackFactory
from hw_airbyte import MemoryLoader, build_faker_venv, configured_catalog, faker_read
from hw_testing import ADMIN_TOKEN, admin_headers, create_project, eventually, run_cli

from headwater.loaders.airbyte.catalog import parse_catalog
from headwater.loaders.airbyte.write import write
from headwater.ops.runtime import Stack

pytestmark = [pytest.mark.slow, pytest.mark.long]

USERS = 300
MODES = (("users", "append_dedup"), ("products", "overwrite"), ("purchases", "append"))


@pytest.fixture(scope="session")
def source_faker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_faker_venv(tmp_path_factory.mktemp("source-faker-venv"))


def records_by_stream(output: bytes) -> Counter[str]:
    messages = [json.loads(line) for line in output.splitlines() if line.strip()]
    return Counter(m["record"]["stream"] for m in messages if m["type"] == "RECORD")


def test_faker_records_land_once_per_mode(source_faker: Path, tmp_path: Path) -> None:
    catalog = configured_catalog(*MODES)
    plans = parse_catalog(json.dumps(catalog).encode())
    output = faker_read(source_faker, tmp_path, catalog, USERS)
    sent = records_by_stream(output)
    assert sent["users"] == USERS and sent["products"] > 0 and sent["purchases"] > 0
    states_in = sum(1 for line in output.splitlines() if b'"type":"STATE"' in line)

    loader = MemoryLoader()
    out = io.BytesIO()
    write(loader, plans, io.BytesIO(output), out, table_version=1)
    echoed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sum(1 for m in echoed if m["type"] == "STATE") == states_in > 0
    assert {name: len(rows) for name, rows in loader.tables.items()} == dict(sent)

    # The same sync again: dedup replaces the users, overwrite replaces the products, append adds.
    write(loader, plans, io.BytesIO(faker_read(source_faker, tmp_path, catalog, USERS)), io.BytesIO(), 2)
    assert len(loader.tables["users"]) == USERS
    assert len({row.record["id"] for row in loader.tables["users"]}) == USERS
    assert len(loader.tables["products"]) == sent["products"]
    assert {row.table_version for row in loader.tables["products"]} == {2}
    assert len(loader.tables["purchases"]) == 2 * sent["purchases"]


async def sync(stack: Stack, workdir: Path, project_id: str, output: bytes) -> list[dict[str, Any]]:
    """`headwater import airbyte write` with faker's output on stdin; the messages it printed."""
    config = workdir / "destination.json"
    config.write_text(
        json.dumps({"control_url": stack.control_url, "token": ADMIN_TOKEN, "project": project_id})
    )
    catalog = workdir / "catalog.json"
    catalog.write_text(json.dumps(configured_catalog(*MODES)))
    run = await run_cli(
        "import",
        "airbyte",
        "write",
        "--config",
        str(config),
        "--catalog",
        str(catalog),
        stdin=output.decode(),
    )
    assert run.code == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return [json.loads(line) for line in run.stdout.splitlines()]


@pytest.mark.services
async def test_faker_into_a_running_headwater(
    source_faker: Path, tmp_path: Path, make_stack: StackFactory, http: httpx.AsyncClient, project_id: str
) -> None:
    stack = await make_stack(control=True, consumer=True)
    await create_project(http, stack, project_id)
    catalog = configured_catalog(*MODES)
    output = faker_read(source_faker, tmp_path, catalog, USERS)
    sent = records_by_stream(output)
    states_in = sum(1 for line in output.splitlines() if b'"type":"STATE"' in line)

    printed = await sync(stack, tmp_path, project_id, output)
    assert sum(1 for m in printed if m["type"] == "STATE") == states_in

    async def counts() -> dict[str, int] | str:
        """Rows per table (FINAL where keyed: replaced rows gone), or why they cannot be counted yet."""
        found = {}
        for name, mode in MODES:
            final = " FINAL" if mode.endswith("dedup") else ""
            response = await http.post(
                f"{stack.control_url}/v1/projects/{project_id}/query",
                json={"sql": f"SELECT count() FROM import_{name}{final}"},
                headers=admin_headers(),
            )
            if response.status_code != 200:  # e.g. the writer has not created the table yet
                return response.text
            found[name] = response.json()["rows"][0][0]
        return found

    await eventually(counts, lambda found: found == dict(sent), timeout=30)
    listing = await http.get(f"{stack.control_url}/v1/projects/{project_id}/imports", headers=admin_headers())
    assert listing.status_code == 200, listing.text
    saved = listing.json()["state"]["airbyte_state"]
    assert {s["stream"]["stream_descriptor"]["name"] for s in saved} == {name for name, _ in MODES}

    # The same sync again: users deduplicated by id, products overwritten, purchases appended.
    await sync(stack, tmp_path, project_id, faker_read(source_faker, tmp_path, catalog, USERS))
    expected = {"users": USERS, "products": sent["products"], "purchases": 2 * sent["purchases"]}
    await eventually(counts, lambda found: found == expected, timeout=30)
