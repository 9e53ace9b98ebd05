"""`HttpImportLoader`: the `ImportLoader` (loaders/loader.py) over the control plane's import API
(docs/control-api.md, "Imports").

Records are buffered per stream and sent in batches bounded by rows and bytes, one batch in flight
at a time on a sender thread (the tap's output is read and encoded while the previous batch is
checked and stored), so a stream's batches reach JetStream in the order they were added. Each
batch has an id of this run (`<run>-<n>`), kept on every retry: connection errors, 429 and 5xx
answers are retried with backoff, and JetStream stores a batch sent twice once. A 4xx answer
raises `ImportRefused` with the code and the field at fault.
"""

from __future__ import annotations

import datetime
import decimal
import secrets
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

DEFAULT_MAX_ROWS = 5_000
DEFAULT_MAX_BYTES = 900_000  # under the control plane's default body limit of 1 MB
DEFAULT_ATTEMPTS = 10
MAX_BACKOFF_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 60.0


class ImportRefused(Exception):
    """The control plane refused a request (4xx): sending it again would not help."""

    def __init__(self, status: int, code: str, message: str, field: str | None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class ImportUnavailable(Exception):
    """The control plane could not be reached, or answered 5xx, on every attempt."""


def _default(value: Any) -> Any:
    """What the JSON of a tap's records may hold beyond JSON (singer-sdk parses decimals)."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**63 else float(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def encode_json(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)


@dataclass
class _Buffer:
    table_version: int | None
    records: list[bytes] = field(default_factory=list)
    size: int = 0


class HttpImportLoader:
    def __init__(
        self,
        control_url: str,
        token: str,
        project: str,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        attempts: int = DEFAULT_ATTEMPTS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not 1 <= max_rows <= 10_000:
            raise ValueError("max_rows must be between 1 and 10000 (the control plane's limit)")
        self._base = f"{control_url.rstrip('/')}/v1/projects/{project}/imports"
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=REQUEST_TIMEOUT_SECONDS,
            transport=transport,
        )
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._attempts = attempts
        self._run = secrets.token_hex(6)
        self._sent = 0
        self._schemas: dict[str, tuple[bytes, bytes]] = {}  # stream → its schema's and key's JSON
        self._buffers: dict[str, _Buffer] = {}
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-sender")
        self._in_flight: Future[None] | None = None
        self.records_sent = 0

    # -- the ImportLoader interface ---------------------------------------------------------------

    def declare(self, stream: str, schema: Mapping[str, Any], key_properties: Sequence[str]) -> None:
        declared = (encode_json(schema), encode_json(list(key_properties)))
        if self._schemas.get(stream) != declared:
            self._send_buffer(stream)  # records so far go with the schema they were added under
            self._schemas[stream] = declared

    def add(self, stream: str, record: Mapping[str, Any], table_version: int | None = None) -> None:
        if stream not in self._schemas:
            raise ValueError(f"a record of stream {stream!r} before its schema")
        buffer = self._buffers.get(stream)
        if buffer is not None and buffer.table_version != table_version:
            self._send_buffer(stream)
            buffer = None
        if buffer is None:
            buffer = self._buffers[stream] = _Buffer(table_version)
        encoded = encode_json(record)
        if buffer.records and buffer.size + len(encoded) > self._max_bytes:
            self._send_buffer(stream)
            buffer = self._buffers[stream] = _Buffer(table_version)
        buffer.records.append(encoded)
        buffer.size += len(encoded) + 1
        if len(buffer.records) >= self._max_rows:
            self._send_buffer(stream)

    def activate_version(self, stream: str, table_version: int) -> None:
        self._send_buffer(stream)
        body = encode_json({"stream": stream, "table_version": table_version, "batch_id": self._batch_id()})
        self._submit("POST", "/activate-version", body)

    def flush(self) -> None:
        for stream in list(self._buffers):
            self._send_buffer(stream)
        self._wait()

    def save_state(self, state: Mapping[str, Any]) -> None:
        self.flush()
        self._request("PUT", "/state", encode_json({"state": state}))

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._sender.shutdown(wait=True)
            self._http.close()

    # -- sending ----------------------------------------------------------------------------------

    def _batch_id(self) -> str:
        self._sent += 1
        return f"{self._run}-{self._sent:010d}"

    def _send_buffer(self, stream: str) -> None:
        buffer = self._buffers.pop(stream, None)
        if buffer is None or not buffer.records:
            return
        schema, key = self._schemas[stream]
        version = b"" if buffer.table_version is None else b',"table_version":%d' % buffer.table_version
        body = b"".join(
            (
                b'{"stream":', encode_json(stream), b',"schema":', schema, b',"key_properties":', key,
                b',"batch_id":"', self._batch_id().encode(), b'"', version,
                b',"records":[', b",".join(buffer.records), b"]}",
            )
        )  # fmt: skip
        self._submit("POST", "/batches", body, len(buffer.records))

    def _submit(self, method: str, path: str, body: bytes, records: int = 0) -> None:
        """Send on the sender thread once the batch before it is stored (one in flight: order is
        kept, and memory holds one batch being sent and one being filled)."""
        self._wait()

        def send() -> None:
            self._request(method, path, body)
            self.records_sent += records

        self._in_flight = self._sender.submit(send)

    def _wait(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()  # raises what stopped it

    def _request(self, method: str, path: str, body: bytes) -> httpx.Response:
        last: str = ""
        for attempt in range(self._attempts):
            if attempt:
                time.sleep(min(MAX_BACKOFF_SECONDS, 0.25 * 2**attempt))
            try:
                response = self._http.request(method, self._base + path, content=body)
            except httpx.TransportError as exc:
                last = f"cannot reach the control plane: {exc!r}"
                continue
            if response.status_code < 400:
                return response
            if response.status_code == 429 or response.status_code >= 500:
                last = f"the control plane answered {response.status_code}: {response.text[:300]}"
                continue
            raise _refused(response)
        raise ImportUnavailable(f"{method} {path} failed after {self._attempts} attempts; last: {last}")


def _refused(response: httpx.Response) -> ImportRefused:
    try:
        error = response.json()
    except ValueError:
        error = {}
    if not isinstance(error, dict):
        error = {}
    return ImportRefused(
        response.status_code,
        str(error.get("code", "refused")),
        str(error.get("message", response.text[:300])),
        error.get("field"),
    )
