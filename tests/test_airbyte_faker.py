"""PyPI's airbyte-source-faker piped into the destination's `write`: real Airbyte messages (stream
states, statuses, logs, estimates) through the protocol logic. Faker runs in a virtualenv of its
own, built once per test session (~90 s: marked slow)."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
from hw_airbyte import MemoryLoader, build_faker_venv, configured_catalog, faker_read

from headwater.loaders.airbyte.catalog import parse_catalog
from headwater.loaders.airbyte.write import write

pytestmark = pytest.mark.slow

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
