"""HttpImportLoader's side of the HTTP exchange: batches bounded by rows and bytes, a retried
batch keeps its batch_id, a refusal is an exception naming the field. The control plane here is
an httpx transport function (nothing behind it crosses NATS or ClickHouse); the way through a real
stack is tests/test_imports_api.py."""

from __future__ import annotations

import httpx
import orjson
import pytest

from headwater.loaders.http import HttpImportLoader, ImportRefused, ImportUnavailable

SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}}}


class ControlPlane:
    def __init__(self, answers: list[int] | None = None) -> None:
        self.answers = list(answers or [])  # statuses to answer first (then 200); 0: connection error
        self.requests: list[tuple[str, str, dict[str, object]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        self.requests.append((request.method, request.url.path.rsplit("/", 1)[-1], body))
        status = self.answers.pop(0) if self.answers else 200
        if status == 0:
            raise httpx.ConnectError("refused", request=request)
        if status == 400:
            error = {"status": 400, "code": "invalid_record", "message": "records[1].id must be an integer"}
            return httpx.Response(400, json={**error, "field": "records[1].id"})
        return httpx.Response(status, json={"duplicate": False})


def loader(control: ControlPlane, **options: int) -> HttpImportLoader:
    return HttpImportLoader(
        "http://control", "t" * 16, "shop", transport=httpx.MockTransport(control), **options
    )


def test_batches_are_bounded_by_rows_and_bytes_and_keep_their_order() -> None:
    control = ControlPlane()
    target = loader(control, max_rows=3, max_bytes=60)
    target.declare("users", SCHEMA, ["id"])
    for i in range(8):
        target.add("users", {"id": i, "pad": "x" * (20 if i == 5 else 0)})
    target.save_state({"bookmark": 7})
    target.close()
    batches = [body for _, path, body in control.requests if path == "batches"]
    # 3 rows at most; {"id":5,...} (38 bytes) does not fit after two 18-byte records, nor a third after it
    assert [[r["id"] for r in b["records"]] for b in batches] == [[0, 1, 2], [3, 4], [5, 6], [7]]
    assert control.requests[-1] == ("PUT", "state", {"state": {"bookmark": 7}})
    assert len({b["batch_id"] for b in batches}) == 4


def test_a_failed_request_is_retried_with_the_same_batch_id() -> None:
    control = ControlPlane([503, 0])
    target = loader(control)
    target.declare("users", SCHEMA, ["id"])
    target.add("users", {"id": 1}, table_version=4)
    target.flush()
    ids = [body["batch_id"] for _, _, body in control.requests]
    assert len(ids) == 3 and len(set(ids)) == 1
    assert control.requests[-1][2]["table_version"] == 4


def test_a_refusal_raises_with_the_code_and_field_and_an_outage_gives_up() -> None:
    target = loader(ControlPlane([400]))
    target.declare("users", SCHEMA, ["id"])
    target.add("users", {"id": "x"})
    with pytest.raises(ImportRefused) as refused:
        target.flush()
    assert (refused.value.code, refused.value.field) == ("invalid_record", "records[1].id")

    down = HttpImportLoader(
        "http://control", "t" * 16, "shop", transport=httpx.MockTransport(ControlPlane([0, 0])), attempts=2
    )
    down.declare("users", SCHEMA, ["id"])
    down.add("users", {"id": 1})
    with pytest.raises(ImportUnavailable):
        down.flush()
