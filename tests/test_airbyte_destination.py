"""The Airbyte destination's protocol logic (loaders/airbyte) against an in-memory ImportLoader:
what `write` declares, when it releases states, how the sync modes map, how it fails. The HTTP
loader behind it is tested through a real stack in tests/test_airbyte_stack.py."""

from __future__ import annotations

import io
import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hw_airbyte import MemoryLoader

from headwater.loaders.airbyte.catalog import parse_catalog
from headwater.loaders.airbyte.cli import make_destination
from headwater.loaders.airbyte.config import DestinationConfig
from headwater.loaders.airbyte.messages import ConfigError
from headwater.loaders.airbyte.write import MAX_MESSAGE_BYTES, read_lines, write

VERSION = 1_700_000_000_000


def stream(name: str, mode: str, key: list[list[str]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "stream": {
            "name": name,
            "json_schema": {
                "type": "object",
                "properties": {"id": {"type": "integer"}, "v": {"type": "string"}},
            },
            "supported_sync_modes": ["full_refresh", "incremental"],
        },
        "sync_mode": "incremental",
        "destination_sync_mode": mode,
        **({"primary_key": key} if key is not None else {}),
        **extra,
    }


def catalog(*streams: dict[str, Any]) -> bytes:
    return json.dumps({"streams": list(streams)}).encode()


def record(name: str, id_: int, v: str = "a") -> dict[str, Any]:
    return {"type": "RECORD", "record": {"stream": name, "data": {"id": id_, "v": v}, "emitted_at": 1}}


def stream_state(name: str, cursor: int) -> dict[str, Any]:
    return {
        "type": "STATE",
        "state": {
            "type": "STREAM",
            "stream": {"stream_descriptor": {"name": name}, "stream_state": {"cursor": cursor}},
        },
    }


def status(name: str, value: str) -> dict[str, Any]:
    return {
        "type": "TRACE",
        "trace": {
            "type": "STREAM_STATUS",
            "emitted_at": 1.0,
            "stream_status": {"stream_descriptor": {"name": name}, "status": value},
        },
    }


def lines(*messages: dict[str, Any]) -> io.BytesIO:
    return io.BytesIO(b"".join(json.dumps(m).encode() + b"\n" for m in messages))


class DurabilityCheckingOut(io.BytesIO):
    """stdout that notes, at every state message written, how many records the loader has made
    durable: the front must have flushed all the records before it."""

    def __init__(self, loader: MemoryLoader) -> None:
        super().__init__()
        self.loader = loader
        self.durable_at_state: list[int] = []

    def write(self, data: Any) -> int:
        if json.loads(bytes(data))["type"] == "STATE":
            self.durable_at_state.append(self.loader.durable())
        return super().write(data)

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


def run_write(
    catalog_json: bytes, *messages: dict[str, Any], loader: MemoryLoader | None = None
) -> tuple[MemoryLoader, DurabilityCheckingOut]:
    loader = loader or MemoryLoader()
    out = DurabilityCheckingOut(loader)
    write(loader, parse_catalog(catalog_json), lines(*messages), out, table_version=VERSION)
    return loader, out


def ids(loader: MemoryLoader, name: str) -> list[int]:
    return sorted(row.record["id"] for row in loader.tables[name])


def test_states_are_echoed_only_after_the_records_before_them_are_durable() -> None:
    loader, out = run_write(
        catalog(stream("users", "append"), stream("orgs", "append")),
        record("users", 1),
        record("users", 2),
        stream_state("users", 2),
        record("orgs", 1),
        record("users", 3),
        stream_state("orgs", 1),
        record("users", 4),
    )
    assert out.durable_at_state == [2, 4]
    states = [m["state"] for m in out.messages() if m["type"] == "STATE"]
    assert [s["stream"]["stream_state"] for s in states] == [{"cursor": 2}, {"cursor": 1}]
    # destinationStats: the records of that stream since its previous state
    assert [s["destinationStats"]["recordCount"] for s in states] == [2.0, 1.0]
    assert ids(loader, "users") == [1, 2, 3, 4] and loader.closed  # the rest flushed at the end
    # the saved state is the whole state a source resumes from: the latest of every stream
    assert loader.states[-1] == {
        "airbyte_state": [
            {
                "type": "STREAM",
                "stream": {"stream_descriptor": {"name": "users"}, "stream_state": {"cursor": 2}},
            },
            {
                "type": "STREAM",
                "stream": {"stream_descriptor": {"name": "orgs"}, "stream_state": {"cursor": 1}},
            },
        ]
    }
    assert loader.calls[:2] == ["declare users", "declare orgs"]


@pytest.mark.parametrize(
    "state",
    [
        {"type": "GLOBAL", "global": {"shared_state": {"lsn": 9}, "stream_states": []}},
        {"type": "LEGACY", "data": {"users": {"cursor": 9}}},
        {"data": {"users": {"cursor": 9}}},  # the oldest form has no type
    ],
)
def test_global_and_legacy_states_go_back_as_they_came(state: dict[str, Any]) -> None:
    loader, out = run_write(
        catalog(stream("users", "append")), record("users", 1), {"type": "STATE", "state": state}
    )
    echoed = [m["state"] for m in out.messages() if m["type"] == "STATE"]
    assert echoed == [{**state, "destinationStats": {"recordCount": 1.0}}]
    assert out.durable_at_state == [1]
    assert loader.states == [{"airbyte_state": [state]}]


def test_append_dedup_keeps_the_last_record_of_each_key() -> None:
    loader, _ = run_write(
        catalog(stream("users", "append_dedup", [["id"]])),
        record("users", 1, "old"),
        record("users", 2),
        record("users", 1, "new"),
    )
    assert loader.keys["users"] == ("id",)
    assert sorted((r.record["id"], r.record["v"]) for r in loader.tables["users"]) == [(1, "new"), (2, "a")]
    assert all(row.table_version is None for row in loader.tables["users"])


def test_append_dedup_falls_back_to_the_source_defined_key() -> None:
    configured = stream("users", "append_dedup")
    configured["stream"]["source_defined_primary_key"] = [["id"]]
    assert parse_catalog(catalog(configured))["users"].key_properties == ("id",)


def test_append_keeps_every_record_without_a_key() -> None:
    loader, _ = run_write(
        catalog(stream("users", "append", [["id"]])), record("users", 1), record("users", 1)
    )
    assert loader.keys["users"] == () and ids(loader, "users") == [1, 1]


def test_overwrite_replaces_the_older_rows_when_the_stream_completes() -> None:
    loader = MemoryLoader()
    loader.declare("users", {}, [])
    loader.add("users", {"id": 99}, VERSION - 5)  # a previous overwrite sync
    loader.flush()
    loader, _ = run_write(
        catalog(stream("users", "overwrite")),
        record("users", 1),
        record("users", 2),
        status("users", "COMPLETE"),
        loader=loader,
    )
    assert ids(loader, "users") == [1, 2]
    assert all(row.table_version == VERSION for row in loader.tables["users"])
    assert loader.calls.count("activate users") == 1


def test_overwrite_of_an_incomplete_stream_keeps_the_older_rows() -> None:
    loader = MemoryLoader()
    loader.declare("users", {}, [])
    loader.add("users", {"id": 99}, VERSION - 5)
    loader.flush()
    loader, out = run_write(
        catalog(stream("users", "overwrite")),
        record("users", 1),
        status("users", "INCOMPLETE"),
        loader=loader,
    )
    assert ids(loader, "users") == [1, 99] and "activate users" not in loader.calls
    assert any(m["type"] == "LOG" and m["log"]["level"] == "WARN" for m in out.messages())


def test_overwrite_without_statuses_completes_at_the_end_of_the_input() -> None:
    loader = MemoryLoader()
    loader.declare("users", {}, [])
    loader.add("users", {"id": 99}, VERSION - 5)
    loader.flush()
    loader, _ = run_write(catalog(stream("users", "overwrite")), record("users", 1), loader=loader)
    assert ids(loader, "users") == [1]


def test_overwrite_dedup_and_a_clearing_refresh() -> None:
    plans = parse_catalog(
        catalog(
            stream("a", "overwrite_dedup", [["id"]]),
            stream("b", "append", generation_id=3, minimum_generation_id=3),  # refresh: remove records
            stream("c", "append", generation_id=3, minimum_generation_id=0),  # refresh: keep records
        )
    )
    assert (plans["a"].key_properties, plans["a"].replaces_rows) == (("id",), True)
    assert (plans["b"].key_properties, plans["b"].replaces_rows) == ((), True)
    assert plans["c"].replaces_rows is False


@pytest.mark.parametrize(
    ("configured", "fault"),
    [
        (stream("users", "append_dedup"), "needs a primary key"),
        (stream("users", "append_dedup", [["address", "id"]]), "nested"),
        (stream("users", "append_dedup", [["nope"]]), "'nope' is not in the stream's json_schema"),
        (stream("users", "soft_delete"), "'soft_delete' is not supported"),
        ({"stream": {"name": "users"}, "destination_sync_mode": "append"}, "json_schema"),
        (stream("u" * 65, "append"), "a stream name has 1 to 64 characters"),
        ({**stream("users", "append"), "stream": {"name": "users", "json_schema": {}}}, "properties"),
    ],
)
def test_catalog_faults_name_the_stream_and_the_field(configured: dict[str, Any], fault: str) -> None:
    with pytest.raises(ConfigError, match=fault):
        parse_catalog(catalog(configured))


def test_a_stream_name_twice_is_refused() -> None:
    twice = stream("users", "append")
    with pytest.raises(ConfigError, match="would both be table import_users"):
        parse_catalog(catalog(twice, {**twice, "stream": {**twice["stream"], "namespace": "other"}}))
    with pytest.raises(ConfigError, match="'a-b' and 'a_b' would both be table import_a_b"):
        parse_catalog(catalog(stream("a-b", "append"), stream("a_b", "append")))


def test_an_oversized_message_is_refused() -> None:
    with pytest.raises(ConfigError, match="over 10 bytes"):
        list(read_lines(io.BytesIO(b"x" * 100), limit=10))
    with pytest.raises(ConfigError, match=f"over {MAX_MESSAGE_BYTES} bytes"):
        list(read_lines(io.BytesIO(b"{" * (MAX_MESSAGE_BYTES + 1))))
    assert list(read_lines(io.BytesIO(b"0123456789\n\n  \nab"), limit=10)) == [b"0123456789\n", b"ab"]


# -- through the commands: what the platform reads on stdout --------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"control_url": "http://127.0.0.1:9", "token": "t", "project": "shop"}))
    catalog_path = tmp_path / "catalog.json"
    catalog_path.write_bytes(catalog(stream("users", "append")))
    return {"config": config, "catalog": catalog_path}


def run_command(loader: MemoryLoader, *args: str, stdin: bytes = b"") -> tuple[int, list[dict[str, Any]]]:
    made: list[DestinationConfig] = []

    def factory(config: DestinationConfig) -> MemoryLoader:
        made.append(config)
        return loader

    result = CliRunner().invoke(make_destination(factory), list(args), input=stdin)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result
    if args[0] == "write" and result.exit_code == 0:
        assert made == [DestinationConfig("http://127.0.0.1:9", "t", "shop")]
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines()]


def test_spec_describes_the_config() -> None:
    code, messages = run_command(MemoryLoader(), "spec")
    assert code == 0 and [m["type"] for m in messages] == ["SPEC"]
    spec = messages[0]["spec"]
    assert spec["connectionSpecification"]["required"] == ["control_url", "token", "project"]
    assert spec["connectionSpecification"]["properties"]["token"]["airbyte_secret"] is True
    assert set(spec["supported_destination_sync_modes"]) >= {"append", "overwrite", "append_dedup"}


def test_write_command_echoes_states(files: dict[str, Path]) -> None:
    stdin = lines(record("users", 1), stream_state("users", 1), {"type": "LOG", "log": {"level": "INFO"}})
    loader = MemoryLoader()
    code, messages = run_command(
        loader,
        "write",
        "--config",
        str(files["config"]),
        "--catalog",
        str(files["catalog"]),
        stdin=stdin.read(),
    )
    assert code == 0
    assert [m["type"] for m in messages] == ["STATE", "LOG"]
    assert ids(loader, "users") == [1]


@pytest.mark.parametrize(
    ("stdin", "fault"),
    [
        (
            b'{"type": "RECORD", "record": {"stream": "ghosts", "data": {}}}\n',
            "'ghosts', not in the configured catalog",
        ),
        (b"not json\n", "not an Airbyte message"),
        (b'{"type": "RECORD"}\n', "without its `record`"),
        (b'{"type": "STATE", "state": null}\n', "without its `state`"),
        (b'{"type": "RECORD", "record": {"stream": "users", "data": [1]}}\n', "record.data"),
        (b'{"type": "STATE", "state": {"type": "SHARDED"}}\n', "'SHARDED' is not one of"),
    ],
)
def test_bad_input_ends_with_an_error_trace(files: dict[str, Path], stdin: bytes, fault: str) -> None:
    code, messages = run_command(
        MemoryLoader(),
        "write",
        "--config",
        str(files["config"]),
        "--catalog",
        str(files["catalog"]),
        stdin=stdin,
    )
    assert code == 1
    trace = messages[-1]["trace"]
    assert trace["type"] == "ERROR" and fault in trace["error"]["message"]
    assert trace["error"]["failure_type"] == "config_error"


def test_a_loader_failure_releases_no_state(files: dict[str, Path]) -> None:
    loader = MemoryLoader(fail_on_flush=True)
    stdin = lines(record("users", 1), stream_state("users", 1)).read()
    code, messages = run_command(
        loader, "write", "--config", str(files["config"]), "--catalog", str(files["catalog"]), stdin=stdin
    )
    assert code == 1 and "STATE" not in [m["type"] for m in messages]
    assert messages[-1]["trace"]["error"]["failure_type"] == "system_error"
    assert "the control API is gone" in messages[-1]["trace"]["error"]["message"]


@pytest.mark.parametrize(
    ("config", "fault"),
    [
        ("{", "not JSON"),
        ('{"control_url": "http://x", "token": "t"}', "missing required field `project`"),
        ('{"control_url": "ftp://x", "token": "t", "project": "shop"}', "http:// or https://"),
        ('{"control_url": "http://x", "token": "t", "project": "Shop!"}', "project must match"),
        ('{"control_url": "http://x", "token": "", "project": "shop"}', "token must be"),
        ('{"control_url": "http://127.0.0.1:9", "token": "t", "project": "shop"}', "cannot reach"),
    ],
)
def test_check_fails_with_a_message_on_a_bad_config(tmp_path: Path, config: str, fault: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(config)
    code, messages = run_command(MemoryLoader(), "check", "--config", str(path))
    assert code == 0
    assert messages == [
        {
            "type": "CONNECTION_STATUS",
            "connectionStatus": {"status": "FAILED", "message": messages[0]["connectionStatus"]["message"]},
        }
    ]
    assert fault in messages[0]["connectionStatus"]["message"]


def test_the_connector_image_runs_the_installed_destination() -> None:
    """Airbyte runs the image's entrypoint (and reads AIRBYTE_ENTRYPOINT): both must be the console
    script the package installs; the build context leaves the virtualenvs and data out."""
    root = Path(__file__).resolve().parents[1]
    dockerfile = (root / "loaders/airbyte/Dockerfile").read_text()
    assert 'ENTRYPOINT ["destination-headwater"]' in dockerfile
    assert 'ENV AIRBYTE_ENTRYPOINT="destination-headwater"' in dockerfile
    [script] = entry_points(group="console_scripts", name="destination-headwater")
    assert script.value == "headwater.loaders.airbyte.cli:main"
    ignored = (root / "loaders/airbyte/Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".headwater", ".git", "build"} <= set(ignored)
