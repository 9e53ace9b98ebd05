"""Helpers of the Airbyte destination's tests: an in-memory ImportLoader for the protocol logic,
and airbyte-source-faker in a virtualenv of its own (it conflicts with our dependencies; Airbyte
runs every connector in its own container the same way)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAKER_PACKAGE = "airbyte-source-faker"


@dataclass
class StoredRow:
    record: dict[str, Any]
    table_version: int | None


@dataclass
class MemoryLoader:
    """ImportLoader's contract in memory: added records become durable on flush; a keyed stream
    keeps the last record of each key; activate_version drops rows of older table versions.
    `calls` is the order of the calls, for the tests of what the front does when."""

    keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    schemas: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    pending: list[tuple[str, StoredRow]] = field(default_factory=list)
    tables: dict[str, list[StoredRow]] = field(default_factory=dict)
    states: list[Mapping[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    closed: bool = False
    fail_on_flush: bool = False

    def declare(self, stream: str, schema: Mapping[str, Any], key_properties: Sequence[str]) -> None:
        self.calls.append(f"declare {stream}")
        self.schemas[stream] = schema
        self.keys[stream] = tuple(key_properties)
        self.tables.setdefault(stream, [])

    def add(self, stream: str, record: Mapping[str, Any], table_version: int | None = None) -> None:
        assert stream in self.keys, f"record of {stream} before its declaration"
        self.pending.append((stream, StoredRow(dict(record), table_version)))

    def activate_version(self, stream: str, table_version: int) -> None:
        self.calls.append(f"activate {stream}")
        self.flush()
        self.tables[stream] = [
            row for row in self.tables[stream] if (row.table_version or 0) >= table_version
        ]

    def flush(self) -> None:
        if self.fail_on_flush:
            raise ConnectionError("the control API is gone")
        for stream, row in self.pending:
            key = self.keys[stream]
            table = self.tables[stream]
            if key:
                identity = tuple(row.record.get(k) for k in key)
                table[:] = [old for old in table if tuple(old.record.get(k) for k in key) != identity]
            table.append(row)
        self.pending.clear()

    def save_state(self, state: Mapping[str, Any]) -> None:
        self.flush()
        self.calls.append("state")
        self.states.append(state)

    def close(self) -> None:
        self.flush()
        self.calls.append("close")
        self.closed = True

    def durable(self) -> int:
        return sum(len(rows) for rows in self.tables.values())


def build_faker_venv(directory: Path) -> Path:
    """A virtualenv with airbyte-source-faker in `directory`; its `source-faker` executable."""
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True, timeout=120)
    result = subprocess.run(
        [str(directory / "bin" / "pip"), "install", "-q", FAKER_PACKAGE],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return directory / "bin" / "source-faker"


def configured_catalog(*streams: tuple[str, str]) -> dict[str, Any]:
    """A configured catalog of faker's streams: (name, destination_sync_mode) pairs, keyed by id."""
    return {
        "streams": [
            {
                "stream": {
                    "name": name,
                    "json_schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
                    "supported_sync_modes": ["full_refresh", "incremental"],
                    "source_defined_primary_key": [["id"]],
                },
                "sync_mode": "full_refresh" if mode.startswith("overwrite") else "incremental",
                "cursor_field": ["updated_at"],
                "destination_sync_mode": mode,
                "primary_key": [["id"]],
            }
            for name, mode in streams
        ]
    }


def faker_read(
    source_faker: Path, workdir: Path, catalog: dict[str, Any], count: int, seed: int = 7
) -> bytes:
    """`source-faker read`'s standard output for `count` users (and as many products, purchases)."""
    config = workdir / "faker-config.json"
    config.write_text(json.dumps({"count": count, "seed": seed, "records_per_slice": 100, "parallelism": 1}))
    catalog_path = workdir / "faker-catalog.json"
    catalog_path.write_text(json.dumps(catalog))
    result = subprocess.run(
        [str(source_faker), "read", "--config", str(config), "--catalog", str(catalog_path)],
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
